"""Data-subject requests and consent changes that drive egress and every store (layer 5):
access, erasure, propagation to destinations, subject data, and the consent API and topic
that trigger propagation."""

from tidegate.egress.destinations.kafka.client import KafkaDestination

__all__ = ["KafkaDestination"]

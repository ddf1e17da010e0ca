"""Project folders: typed models, the loader and its checks, and the `init` scaffold."""

from tidegate.project.loader import load_project
from tidegate.project.project import Policy, Product, Project, Source, Sync

__all__ = ["Policy", "Product", "Project", "Source", "Sync", "load_project"]

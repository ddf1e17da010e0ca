"""The online store: the live version of each product, by entity key, for serving."""

from tidegate.store.online.base import OnlineStore, open_online_store

__all__ = ["OnlineStore", "open_online_store"]

"""The online store: the live version of each product, by entity key, for serving."""

from tidegate.store.online.base import OnlineStore, WriterSpec, open_online_store, open_writer

__all__ = ["OnlineStore", "WriterSpec", "open_online_store", "open_writer"]

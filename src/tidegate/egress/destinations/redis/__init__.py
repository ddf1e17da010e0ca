from tidegate.egress.destinations.redis.client import RedisDestination

__all__ = ["RedisDestination"]

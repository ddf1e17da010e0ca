from tidegate.egress.destinations.mysql.client import MysqlDestination

__all__ = ["MysqlDestination"]

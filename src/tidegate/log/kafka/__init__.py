"""The Apache Kafka event log backend (confluent-kafka is imported only when used)."""

from tidegate.log.kafka.client import KafkaConsumer, KafkaEventLog

__all__ = ["KafkaConsumer", "KafkaEventLog"]

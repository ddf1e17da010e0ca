"""The real Kafka broker started by scripts/services.sh: keyed produce and consume."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.services


def test_keyed_messages_round_trip_in_order(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"tidegate-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = [(f"customer-{i % 5}", f"event-{i}") for i in range(50)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            received.append((message.key().decode(), message.value().decode()))
    finally:
        consumer.close()
        admin.delete_topics([topic])
    assert sorted(received) == sorted(sent)
    for key in {k for k, _ in sent}:  # per-key order holds across partitions
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]

"""Two projects on one Kafka cluster: a `namespace` keeps tidegate's own topics and
consumer groups apart.

Without it, two projects with a product of the same name wrote one
`__changes.<product>` topic, and a test (or an operator) deleting one project's change
stream deleted the other's under it; their workers shared the `tidegate-worker` group.
"""

from __future__ import annotations

import uuid

import pytest

from tidegate.log.base import Message, namespaced
from tidegate.products.changes import changes_topic
from tidegate.project.models_backends import KafkaLogConfig

pytestmark = pytest.mark.services


def test_namespaced_names() -> None:
    assert namespaced("", "tidegate-worker") == "tidegate-worker"
    assert namespaced("prod", "tidegate-worker") == "prod.tidegate-worker"
    assert changes_topic("orders") == "__changes.orders"
    assert changes_topic("orders", "staging") == "staging.__changes.orders"


def test_a_namespace_must_be_a_legal_topic_prefix() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        KafkaLogConfig(type="kafka", namespace="a b")
    assert KafkaLogConfig(type="kafka", namespace="team-a.prod").namespace == "team-a.prod"


def test_groups_in_two_namespaces_are_independent(kafka_bootstrap: str) -> None:
    from tidegate.log.kafka import KafkaEventLog

    suffix = uuid.uuid4().hex[:8]
    topic = f"ns-test-{suffix}"
    first = KafkaEventLog(kafka_bootstrap, partitions=1, namespace=f"a{suffix}")
    second = KafkaEventLog(kafka_bootstrap, partitions=1, namespace=f"b{suffix}")
    try:
        first.append(topic, [Message(b"k", b"v")])
        consumer = first.consumer("tidegate-worker", [topic])
        try:
            got = []
            for _ in range(100):
                got += consumer.poll(50, 0.2)
                if got:
                    break
            assert [r.value for r in got] == [b"v"]
            consumer.commit({(topic, 0): got[-1].offset + 1})
        finally:
            consumer.close()
        assert first.committed("tidegate-worker", topic) == {0: 1}
        # the same group name in the other namespace has read nothing
        assert second.committed("tidegate-worker", topic) == {}
        # and the physical group carries the namespace
        assert first.committed(f"a{suffix}.tidegate-worker", topic) == {}
    finally:
        first.delete_topic(topic)
        first.close()
        second.close()


def test_a_change_stream_never_written_is_absent_not_an_error(kafka_bootstrap: str) -> None:
    from tidegate.log.kafka import KafkaEventLog

    log = KafkaEventLog(kafka_bootstrap, namespace=f"n{uuid.uuid4().hex[:8]}")
    try:
        assert not log.has_topic(changes_topic("customer_orders", log.namespace))
    finally:
        log.close()

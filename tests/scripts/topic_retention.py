#!/usr/bin/env python3
"""Sets a topic's retention, as an operator would with `kafka-configs --alter --add-config`.

Usage: topic_retention.py BROKERS TOPIC RETENTION_MS

A stock confluent-kafka AdminClient sends IncrementalAlterConfigs (SET retention.ms and
cleanup.policy=delete) for TOPIC. The rdkafka crate offers only the older AlterConfigs, which
Tansu 0.6 does not implement. Exits 1 when the broker refuses.
"""
import sys

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource


def main() -> int:
    brokers, topic, retention_ms = sys.argv[1], sys.argv[2], sys.argv[3]
    admin = AdminClient({"bootstrap.servers": brokers})
    entries = [
        ConfigEntry("retention.ms", retention_ms, incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET),
    ]
    res = ConfigResource("topic", topic, incremental_configs=entries)
    for _, fut in admin.incremental_alter_configs([res]).items():
        fut.result(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Publishes records far larger than vitalsink's limits, as an outside producer would.

Usage: produce_big.py BROKERS TOPIC SIZE:PARTITION [SIZE:PARTITION ...]

A stock confluent-kafka (librdkafka) producer set to message.max.bytes = 16 MiB, the way a
producer of a broker that allows 10 MiB records is set up, publishes one record of SIZE bytes
to each PARTITION, keyed `big-<n>`. The value's byte i is i % 251, so a reader can tell a true
prefix from other bytes. Prints one JSON line per record: partition, offset, size and the
SHA-256 of the value (hex). Exits 1 if any delivery fails.
"""
import hashlib
import json
import sys

from confluent_kafka import Producer

PATTERN = bytes(range(251))


def value(size: int) -> bytes:
    reps = size // len(PATTERN) + 1
    return (PATTERN * reps)[:size]


def main() -> int:
    brokers, topic, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "message.max.bytes": 16 << 20,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    delivered = []
    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset(), len(msg.value())))

    digests = {}
    for n, spec in enumerate(specs):
        size, partition = (int(x) for x in spec.split(":"))
        v = value(size)
        digests[size] = hashlib.sha256(v).hexdigest()
        producer.produce(topic, key=f"big-{n}".encode(), value=v, partition=partition, on_delivery=report)
        producer.poll(0)
    producer.flush(60)
    if failed or len(delivered) != len(specs):
        print(f"deliveries failed: {failed}", file=sys.stderr)
        return 1
    for partition, offset, size in delivered:
        print(json.dumps({"partition": partition, "offset": offset, "size": size, "sha256": digests[size]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

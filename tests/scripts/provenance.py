#!/usr/bin/env python3
"""A study app's resends and a data manager's checks, with stock clients (issue 25).

Usage:
  provenance.py produce BROKERS TOPIC PLAN.json
      Publishes with confluent-kafka (acks=all, no idempotence: an app's own retries) and writes
      PLAN.json: every record sent (partition, offset, key, value as base64) and the readings
      that must be stored once (participant, device, metric, instant in UTC µs, value, UTC
      offset in minutes or null).
        - participant prov-a, one upload of 7 samples written with the offsets +05:45, -03:30,
          +14:00, -12:00, Z and -00:00 (unknown), two of them the same reading twice at one
          instant (kept twice: one record), and a third value at that instant;
        - that upload resent as the same bytes, then as single readings, then split in two;
        - the same readings from a second device (chest-1): kept, another source;
        - participant prov-old, 6 samples 10 days ago (to be archived).
  produce-late BROKERS TOPIC PLAN.json
      Resends prov-old's upload, the same bytes, after its day was archived.
  check ROWS.json ARCHIVE_ROOT PLAN.json
      ROWS.json: the shards' rows of prov-* (written by the Rust test). Reads the archive with
      pandas, pyarrow datasets and DuckDB; database + archive must hold each planned reading
      exactly once, with its UTC offset, a receipt time, and lineage naming a record that
      carried it. Prints a JSON summary.
  lineage BROKERS ARCHIVE_ROOT PLAN.json
      Picks a row in the archive (pyarrow), fetches its source record with a confluent-kafka
      consumer by (src_topic, src_partition, src_offset) alone, and compares the bytes with
      what was produced; the reading must be in the record.
  mixed ARCHIVE_ROOT
      Adds an object in the layout and schema of before the provenance columns (7 columns,
      written by pyarrow) and reads the archive with pandas, pyarrow, polars, DuckDB and Spark
      the way the README shows for a mixed archive: every reader must see the same rows and
      sums, and NULL provenance for the old object's rows.
  adbc ADDR PLAN.json
      Reads prov-* through `query serve` with ADBC's Flight SQL driver: each reading once, its
      UTC offset as sent.
"""
import base64
import datetime as dt
import json
import os
import sys
import time

OFFSETS = [345, -210, 840, -720, 0, None]  # minutes; None: written -00:00


def ts_text(micros, offset_min):
    t = dt.datetime.fromtimestamp(micros / 1e6, tz=dt.timezone.utc)
    if offset_min is None:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "-00:00"
    if offset_min == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    local = t.astimezone(dt.timezone(dt.timedelta(minutes=offset_min)))
    return local.isoformat(timespec="microseconds")


def producer(brokers):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": brokers, "acks": "all", "enable.idempotence": False,
                     "linger.ms": 0})


def send(p, topic, key, value, sent):
    """Produces one record, waits for it, appends (partition, offset, key, value) to sent."""
    box = {}

    def done(err, msg):
        box["err"], box["msg"] = err, msg

    p.produce(topic, key=key.encode(), value=value.encode(), on_delivery=done)
    p.flush(30)
    if box.get("err") is not None or "msg" not in box:
        raise SystemExit(f"delivery failed: {box.get('err')}")
    m = box["msg"]
    sent.append({"partition": m.partition(), "offset": m.offset(), "key": key,
                 "value": base64.b64encode(value.encode()).decode()})


def batch(pid, samples, device=None):
    body = {"participant_id": pid, "metric": "heart_rate", "unit": "/min"}
    if device:
        body["device_id"] = device
    body["samples"] = [{"ts": ts_text(t, o), "value": v} for t, v, o in samples]
    return json.dumps(body)


def single(pid, sample, device=None):
    t, v, o = sample
    body = {"participant_id": pid, "metric": "heart_rate", "ts": ts_text(t, o), "value": v}
    if device:
        body["device_id"] = device
    return json.dumps(body)


def reading(pid, device, sample):
    t, v, o = sample
    return {"participant_id": pid, "device_id": device, "metric": "heart_rate", "ts": t,
            "value": v, "utc_offset_min": o}


def produce(brokers, topic, plan_path):
    now = int(time.time()) * 1_000_000
    recent = now - 2 * 3600 * 1_000_000
    old = now - 10 * 86400 * 1_000_000
    # prov-a: six instants with six offsets, then a reading repeated at one instant (same
    # value twice, one other value).
    a = [(recent + i * 1_000_000, 60.0 + i, o) for i, o in enumerate(OFFSETS)]
    rep = recent + 10_000_000
    a += [(rep, 70.5, 345), (rep, 70.5, 345), (rep, 71.0, 345)]
    olds = [(old + i * 60_000_000, 50.0 + i, o) for i, o in enumerate(OFFSETS)]
    p = producer(brokers)
    sent = []
    send(p, topic, "prov-a", batch("prov-a", a), sent)
    send(p, topic, "prov-a", batch("prov-a", a), sent)  # the same bytes again
    for s in a:  # unrolled into single readings
        send(p, topic, "prov-a", single("prov-a", s), sent)
    send(p, topic, "prov-a", batch("prov-a", a[:4]), sent)  # split differently
    send(p, topic, "prov-a", batch("prov-a", a[4:]), sent)
    send(p, topic, "prov-a", batch("prov-a", a[:6], "chest-1"), sent)  # another device
    send(p, topic, "prov-old", batch("prov-old", olds), sent)
    want = [reading("prov-a", None, s) for s in a]
    want += [reading("prov-a", "chest-1", s) for s in a[:6]]
    want += [reading("prov-old", None, s) for s in olds]
    json.dump({"topic": topic, "sent": sent, "want": want, "late": batch("prov-old", olds)},
              open(plan_path, "w"))
    print(json.dumps({"records": len(sent), "readings": len(want)}))


def produce_late(brokers, topic, plan_path):
    plan = json.load(open(plan_path))
    p = producer(brokers)
    send(p, topic, "prov-old", plan["late"], plan["sent"])
    json.dump(plan, open(plan_path, "w"))


def key(r):
    return (r["participant_id"], r.get("device_id") or "", r["metric"], int(r["ts"]),
            float(r["value"]))


def fail(msg):
    print(f"provenance.py: {msg}", file=sys.stderr)
    sys.exit(1)


def archive_rows_pyarrow(root):
    import pyarrow.dataset as ds

    folder = f"{root}/measurements"
    if not os.path.isdir(folder):
        return []
    t = ds.dataset(folder, format="parquet", partitioning="hive").to_table(
        filter=ds.field("participant_id").isin(["prov-a", "prov-old"]))
    out = []
    for r in t.to_pylist():
        r["ts"] = int(r["ts"].timestamp() * 1_000_000)
        if r.get("received_at") is not None:
            r["received_at"] = int(r["received_at"].timestamp() * 1_000_000)
        out.append(r)
    return out


def compare(stored, want, what):
    from collections import Counter

    got = Counter(key(r) for r in stored)
    exp = Counter(key(r) for r in want)
    if got != exp:
        fail(f"{what}: stored readings differ from the plan: missing {dict(exp - got)}, "
             f"extra {dict(got - exp)}")
    offsets = {key(r): r["utc_offset_min"] for r in want}
    bad = [(key(r), r.get("utc_offset_min"), offsets[key(r)]) for r in stored
           if r.get("utc_offset_min") != offsets[key(r)]]
    if bad:
        fail(f"{what}: UTC offsets differ (reading, stored, sent): {bad[:5]}")


def check(rows_path, root, plan_path):
    import duckdb
    import pandas as pd

    plan = json.load(open(plan_path))
    db = json.load(open(rows_path))
    arch = archive_rows_pyarrow(root)
    compare(db + arch, plan["want"], "database + archive (pyarrow)")
    # Receipt and lineage: every row has a receipt time, and names a record that carried it.
    carried = {}
    for s in plan["sent"]:
        body = json.loads(base64.b64decode(s["value"]))
        for x in body.get("samples", [body]):
            carried.setdefault((s["partition"], s["offset"]), []).append(x["value"])
    for r in db + arch:
        if r.get("received_at") is None or r.get("received_at_type") not in (0, 1):
            fail(f"no receipt time: {r}")
        if r["src_topic"] != plan["topic"] or r["value"] not in carried.get(
                (r["src_partition"], r["src_offset"]), []):
            fail(f"lineage names a record that does not carry the reading: {r}")
    # pandas and DuckDB on the archive: the same offsets.
    folder = f"{root}/measurements"
    df = pd.read_parquet(folder, filters=[("participant_id", "in", ["prov-a", "prov-old"])])
    pdrows = [{**r, "ts": int(pd.Timestamp(r["ts"]).value // 1000)} for r in df.to_dict("records")]
    for r in pdrows:
        r["utc_offset_min"] = None if pd.isna(r["utc_offset_min"]) else int(r["utc_offset_min"])
        r["device_id"] = None if pd.isna(r["device_id"]) else r["device_id"]
    compare(db + pdrows, plan["want"], "database + archive (pandas)")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    q = (f"SELECT participant_id, device_id, metric, epoch_us(ts) AS ts, value, utc_offset_min "
         f"FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true, union_by_name = true) "
         f"WHERE participant_id IN ('prov-a', 'prov-old')")
    cols = ["participant_id", "device_id", "metric", "ts", "value", "utc_offset_min"]
    ddrows = [dict(zip(cols, r)) for r in con.execute(q).fetchall()]
    compare(db + ddrows, plan["want"], "database + archive (DuckDB)")
    local = con.execute(
        f"SELECT strftime(ts + to_minutes(utc_offset_min::BIGINT), '%Y-%m-%dT%H:%M') "
        f"FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true, union_by_name = true) "
        f"WHERE participant_id = 'prov-old' AND utc_offset_min IS NOT NULL ORDER BY ts").fetchall()
    print(json.dumps({"database": len(db), "archive": len(arch), "pandas": len(pdrows),
                      "duckdb": len(ddrows), "local_times": [x[0] for x in local]}))


def lineage(brokers, root, plan_path):
    from confluent_kafka import Consumer, TopicPartition

    plan = json.load(open(plan_path))
    arch = archive_rows_pyarrow(root)
    if not arch:
        fail("no archived row to trace")
    row = next((r for r in arch if r["utc_offset_min"] == 345), arch[0])
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"lineage-{os.getpid()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(row["src_topic"], row["src_partition"], row["src_offset"])])
    msg = None
    deadline = time.time() + 30
    while msg is None and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and not m.error():
            msg = m
    c.close()
    if msg is None or msg.offset() != row["src_offset"]:
        fail(f"record {row['src_partition']}/{row['src_offset']} not found")
    produced = next(s for s in plan["sent"]
                    if (s["partition"], s["offset"]) == (row["src_partition"], row["src_offset"]))
    if msg.value() != base64.b64decode(produced["value"]):
        fail("the record's bytes differ from what was produced")
    body = json.loads(msg.value())
    if not any(x["value"] == row["value"] and ts_ok(x["ts"], row["ts"])
               for x in body.get("samples", [body])):
        fail(f"the reading is not in its record: {row}")
    kafka_ts = msg.timestamp()[1] * 1000
    if row["received_at"] != kafka_ts:
        fail(f"received_at {row['received_at']} is not the record's timestamp {kafka_ts}")
    print(json.dumps({"row": {k: row[k] for k in ("participant_id", "ts", "value", "src_topic",
                                                   "src_partition", "src_offset")},
                      "record_bytes": len(msg.value()), "bytes_equal": True}))


def ts_ok(text, micros):
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(t.timestamp() * 1_000_000) == micros


def mixed(root):
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    folder = f"{root}/measurements"
    # An object as the archiver wrote it before schema version 12: 7 columns, no field ids.
    old = pa.table({
        "participant_id": pa.array(["prov-legacy"] * 3),
        "metric": pa.array(["heart_rate"] * 3),
        "ts": pa.array([1_700_000_000_000_000 + i for i in range(3)], pa.timestamp("us", tz="UTC")),
        "value": pa.array([1.5, 2.5, 3.5]),
        "unit": pa.array([None] * 3, pa.string()),
        "device_id": pa.array([None] * 3, pa.string()),
        "study_id": pa.array([None] * 3, pa.string()),
    })
    d = f"{folder}/date=2023-11-14/shard=shard0"
    os.makedirs(d, exist_ok=True)
    pq.write_table(old, f"{d}/part-legacy.parquet", compression="zstd")
    # The schema of the newest object (every column): what the README tells readers to use.
    newest = max((os.path.join(dp, f) for dp, _, fs in os.walk(folder) for f in fs
                  if f.endswith(".parquet") and "legacy" not in f), key=os.path.getmtime)
    schema = pq.read_schema(newest)
    out = {}
    t = ds.dataset(folder, format="parquet", partitioning="hive", schema=None).to_table()
    out["pyarrow (inferred)"] = (t.num_rows, sum(t["value"].to_pylist()))
    full = ds.dataset(folder, format="parquet", schema=schema, partitioning="hive")
    t = full.to_table()
    legacy_prov = [r for r in t.filter(ds.field("participant_id") == "prov-legacy").to_pylist()]
    out["pyarrow"] = (t.num_rows, sum(t["value"].to_pylist()))
    df = pd.read_parquet(folder, schema=schema)
    out["pandas"] = (len(df), float(df["value"].sum()))
    lf = pl.scan_parquet(folder, hive_partitioning=True, missing_columns="insert",
                         extra_columns="ignore", schema=pl.Schema(pl.from_arrow(schema.empty_table()).schema))
    g = lf.select(pl.len(), pl.col("value").sum(), pl.col("utc_offset_min").null_count()).collect()
    out["polars"] = (int(g.item(0, 0)), float(g.item(0, 1)))
    con = duckdb.connect()
    n, s = con.execute(f"SELECT count(*), sum(value) FROM read_parquet('{folder}/**/*.parquet', "
                       f"hive_partitioning = true, union_by_name = true)").fetchone()
    out["duckdb"] = (n, s)
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("vitalsink-mixed")
             .config("spark.ui.enabled", "false").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.host", "127.0.0.1").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        sdf = spark.read.option("mergeSchema", "true").parquet(folder)
        r = sdf.selectExpr("count(*)", "sum(value)", "count(utc_offset_min)").collect()[0]
        out["spark"] = (int(r[0]), float(r[1]))
        spark_cols = sdf.columns
    finally:
        spark.stop()
    firsts = {k: v for k, v in out.items()}
    n0, s0 = out["duckdb"]
    bad = {k: v for k, v in firsts.items() if v[0] != n0 or abs(v[1] - s0) > 1e-9 * max(1.0, abs(s0))}
    if bad:
        fail(f"readers disagree on a mixed archive: {firsts}")
    if len(legacy_prov) != 3 or any(r["utc_offset_min"] is not None or r["src_offset"] is not None
                                    for r in legacy_prov):
        fail(f"the old object's rows must read NULL provenance: {legacy_prov}")
    if "utc_offset_min" not in spark_cols:
        fail(f"Spark's merged schema lacks the new columns: {spark_cols}")
    print(json.dumps({"readers": out}))


def adbc(addr, plan_path):
    import adbc_driver_flightsql.dbapi as flightsql

    plan = json.load(open(plan_path))
    with flightsql.connect(f"grpc://{addr}") as conn, conn.cursor() as cur:
        cur.execute("SELECT participant_id, device_id, metric, ts, value, utc_offset_min, "
                    "CAST(ts + arrow_cast(utc_offset_min * 60, 'Duration(Second)') AS DATE) AS local_day "
                    "FROM measurements WHERE participant_id IN ('prov-a', 'prov-old')")
        t = cur.fetch_arrow_table()
    rows = []
    for r in t.to_pylist():
        r["ts"] = int(r["ts"].timestamp() * 1_000_000)
        rows.append(r)
    compare(rows, plan["want"], "query (ADBC)")
    print(json.dumps({"rows": len(rows), "offsets": sorted({str(r["utc_offset_min"]) for r in rows})}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"produce": produce, "produce-late": produce_late, "check": check, "lineage": lineage,
     "mixed": mixed, "adbc": adbc}[cmd](*args)

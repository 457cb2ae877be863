#!/usr/bin/env python3
"""What an analyst gets from a local vitalsink archive with each of the usual readers.

Usage: archive_readers.py ROOT
  ROOT  the archive root, a local directory (the data files are under ROOT/measurements,
        Hive-style: date=YYYY-MM-DD/shard=NAME/part-….parquet).

Reads the archive folder exactly as the README's analyst section does:
  pandas   pandas.read_parquet('ROOT/measurements')               (pyarrow engine)
  pyarrow  pyarrow.dataset.dataset('ROOT/measurements', partitioning='hive')
  polars   polars.scan_parquet('ROOT/measurements', hive_partitioning=True)
  duckdb   read_parquet('ROOT/measurements/**/*.parquet', hive_partitioning = true)
  spark    spark.read.parquet('ROOT/measurements')                 (PySpark, local[2], Java 17)

Prints one JSON object, per reader: rows, per participant [rows, sum of value], and the
`shard` and `date` partition values it saw (and `error` when it failed). Exits 1 when any reader reads no row (Arrow's
dataset discovery, which pandas uses, skips files whose names start with '_' or '.', and so
does Hadoop's file listing under Spark).
"""
import json
import sys

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds

root = sys.argv[1].rstrip("/")
folder = f"{root}/measurements"


def pandas_read():
    df = pd.read_parquet(folder)
    g = df.groupby("participant_id", observed=True)["value"].agg(["count", "sum"])
    return {
        "rows": len(df),
        "totals": {str(p): [int(r["count"]), float(r["sum"])] for p, r in g.iterrows()},
        "shards": sorted(str(s) for s in df["shard"].unique()),
        "dates": sorted(str(d) for d in df["date"].unique()),
    }


def pyarrow_read():
    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    t = dataset.to_table(columns=["participant_id", "value", "shard", "date"])
    g = t.group_by("participant_id").aggregate([("value", "count"), ("value", "sum")])
    return {
        "rows": t.num_rows,
        "totals": {
            p: [int(n), float(s)]
            for p, n, s in zip(
                g["participant_id"].to_pylist(),
                g["value_count"].to_pylist(),
                g["value_sum"].to_pylist(),
            )
        },
        "shards": sorted(set(map(str, t["shard"].to_pylist()))),
        "dates": sorted(set(map(str, t["date"].to_pylist()))),
        "files": len(dataset.files),
    }


def polars_read():
    lf = pl.scan_parquet(folder, hive_partitioning=True)
    g = lf.group_by("participant_id").agg(pl.len().alias("n"), pl.col("value").sum().alias("s"))
    parts = lf.select("shard", "date").unique().collect()
    return {
        "rows": int(lf.select(pl.len()).collect().item()),
        "totals": {p: [int(n), float(s)] for p, n, s in g.collect().iter_rows()},
        "shards": sorted(set(map(str, parts["shard"].to_list()))),
        "dates": sorted(set(map(str, parts["date"].to_list()))),
    }


def duckdb_read():
    con = duckdb.connect()
    src = f"read_parquet('{folder}/**/*.parquet', hive_partitioning = true)"
    return {
        "rows": con.execute(f"SELECT count(*) FROM {src}").fetchall()[0][0],
        "totals": {
            p: [n, s]
            for p, n, s in con.execute(
                f"SELECT participant_id, count(*), sum(value) FROM {src} GROUP BY 1"
            ).fetchall()
        },
        "shards": sorted(r[0] for r in con.execute(f"SELECT DISTINCT shard FROM {src}").fetchall()),
        "dates": sorted(
            r[0] for r in con.execute(f"SELECT DISTINCT date::VARCHAR FROM {src}").fetchall()
        ),
    }


def spark_read():
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("vitalsink-archive-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = spark.read.parquet(folder)
        g = df.groupBy("participant_id").agg(F.count("*").alias("n"), F.sum("value").alias("s"))
        return {
            "rows": df.count(),
            "totals": {r["participant_id"]: [int(r["n"]), float(r["s"])] for r in g.collect()},
            "shards": sorted(str(r[0]) for r in df.select("shard").distinct().collect()),
            "dates": sorted(str(r[0]) for r in df.select("date").distinct().collect()),
        }
    finally:
        spark.stop()


def attempt(read):
    # A reader that finds no file may also fail (no column to select): that is 0 rows too.
    try:
        return read()
    except Exception as e:  # noqa: BLE001 -- reported per reader, the script exits 1
        return {"rows": 0, "totals": {}, "shards": [], "dates": [], "error": repr(e)}


readers = {
    "pandas": pandas_read,
    "pyarrow": pyarrow_read,
    "polars": polars_read,
    "duckdb": duckdb_read,
    "spark": spark_read,
}
out = {name: attempt(read) for name, read in readers.items()}
print(json.dumps(out))
empty = [name for name, r in out.items() if r["rows"] == 0]
if empty:
    print(f"archive_readers: no rows read by {', '.join(empty)} from {folder}: "
          + "; ".join(f"{n}: {out[n].get('error', '0 rows')}" for n in empty), file=sys.stderr)
    sys.exit(1)

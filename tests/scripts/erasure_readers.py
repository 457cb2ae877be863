#!/usr/bin/env python3
"""What DuckDB, pandas and pyarrow find in a vitalsink archive after an erasure.

Usage: erasure_readers.py ROOT VICTIM
  ROOT    the archive root: a local directory, or s3://bucket/prefix (then the environment
          gives S3_ENDPOINT, e.g. http://127.0.0.1:18333, and AWS_ACCESS_KEY_ID /
          AWS_SECRET_ACCESS_KEY; DuckDB reads S3 with the httpfs extension from the
          duckdb-extension-httpfs wheel, pandas and pyarrow with pyarrow.fs.S3FileSystem).
  VICTIM  the erased participant's id.

Reads ROOT/measurements as the README's analyst section does (Hive partitioning):
  duckdb   read_parquet('ROOT/measurements/**/*.parquet', hive_partitioning = true)
  pandas   pandas.read_parquet('ROOT/measurements')                (pyarrow engine)
  pyarrow  pyarrow.dataset.dataset('ROOT/measurements', partitioning='hive')
and, with DuckDB, every Parquet object anywhere under ROOT (the lock folders included).

Prints one JSON object:
  readers: per reader {rows, totals: {participant: [rows, sum of value]},
           victim_rows (rows whose participant_id is VICTIM, found with a filter of the
           reader's own), shards, dates, error (when it failed)}
  everywhere_victim_rows: the victim's rows in any Parquet object under ROOT
  files: [[path relative to ROOT, rows], ...] of every Parquet object under ROOT, sorted
Exits 0 whenever it could print that; the test judges the numbers.
"""
import json
import os
import sys

import duckdb
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

root = sys.argv[1].rstrip("/")
victim = sys.argv[2]
s3 = root.startswith("s3://")


def s3_fs():
    endpoint = os.environ["S3_ENDPOINT"]
    scheme, host = endpoint.split("://", 1)
    return pafs.S3FileSystem(
        access_key=os.environ.get("AWS_ACCESS_KEY_ID", "vitalsink"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "vitalsink"),
        region="us-east-1",
        endpoint_override=host,
        scheme=scheme,
        force_virtual_addressing=False,
    )


if s3:
    fs = s3_fs()
    base = root[len("s3://"):]
else:
    fs = pafs.LocalFileSystem()
    base = root
folder = f"{base}/measurements"


def duck():
    con = duckdb.connect()
    if s3:
        from duckdb_extensions import import_extension

        import_extension("httpfs", con=con)
        con.execute("LOAD httpfs")
        endpoint = os.environ["S3_ENDPOINT"]
        con.execute(
            "CREATE SECRET s3 (TYPE s3, KEY_ID ?, SECRET ?, REGION 'us-east-1', ENDPOINT ?, "
            "URL_STYLE 'path', USE_SSL ?)",
            [
                os.environ.get("AWS_ACCESS_KEY_ID", "vitalsink"),
                os.environ.get("AWS_SECRET_ACCESS_KEY", "vitalsink"),
                endpoint.split("://", 1)[1],
                endpoint.startswith("https://"),
            ],
        )
    return con


def totals_of(pairs):
    return {str(p): [int(n), float(s)] for p, n, s in pairs}


def duckdb_read():
    con = duck()
    src = f"read_parquet('{root}/measurements/**/*.parquet', hive_partitioning = true)"
    return {
        "rows": con.execute(f"SELECT count(*) FROM {src}").fetchall()[0][0],
        "totals": totals_of(
            con.execute(
                f"SELECT participant_id, count(*), sum(value) FROM {src} GROUP BY 1"
            ).fetchall()
        ),
        "victim_rows": con.execute(
            f"SELECT count(*) FROM {src} WHERE participant_id = ?", [victim]
        ).fetchall()[0][0],
        "shards": sorted(r[0] for r in con.execute(f"SELECT DISTINCT shard FROM {src}").fetchall()),
        "dates": sorted(
            r[0] for r in con.execute(f"SELECT DISTINCT date::VARCHAR FROM {src}").fetchall()
        ),
    }


def pandas_read():
    df = pd.read_parquet(folder, filesystem=fs) if s3 else pd.read_parquet(folder)
    g = df.groupby("participant_id", observed=True)["value"].agg(["count", "sum"])
    return {
        "rows": len(df),
        "totals": {str(p): [int(r["count"]), float(r["sum"])] for p, r in g.iterrows()},
        "victim_rows": int((df["participant_id"].astype(str) == victim).sum()),
        "shards": sorted(str(s) for s in df["shard"].unique()),
        "dates": sorted(str(d) for d in df["date"].unique()),
    }


def pyarrow_read():
    dataset = ds.dataset(folder, filesystem=fs, format="parquet", partitioning="hive")
    t = dataset.to_table(columns=["participant_id", "value", "shard", "date"])
    g = t.group_by("participant_id").aggregate([("value", "count"), ("value", "sum")])
    hit = dataset.to_table(
        columns=["participant_id"], filter=pc.field("participant_id") == victim
    )
    return {
        "rows": t.num_rows,
        "totals": totals_of(
            zip(
                g["participant_id"].to_pylist(),
                g["value_count"].to_pylist(),
                g["value_sum"].to_pylist(),
            )
        ),
        "victim_rows": hit.num_rows,
        "shards": sorted(set(map(str, t["shard"].to_pylist()))),
        "dates": sorted(set(map(str, t["date"].to_pylist()))),
    }


def attempt(read):
    try:
        return read()
    except Exception as e:  # noqa: BLE001 -- reported per reader; the test fails on it
        return {"rows": 0, "totals": {}, "victim_rows": -1, "shards": [], "dates": [],
                "error": repr(e)}


out = {"readers": {"duckdb": attempt(duckdb_read), "pandas": attempt(pandas_read),
                   "pyarrow": attempt(pyarrow_read)}}

files = []
for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
    if info.type == pafs.FileType.File and info.path.endswith(".parquet"):
        rel = info.path[len(base) + 1:] if info.path.startswith(base + "/") else info.path
        files.append([rel, pq.ParquetFile(info.path, filesystem=fs).metadata.num_rows])
files.sort()
out["files"] = files
if files:
    con = duck()
    out["everywhere_victim_rows"] = con.execute(
        f"SELECT count(*) FROM read_parquet('{root}/**/*.parquet', union_by_name = true) "
        "WHERE participant_id = ?",
        [victim],
    ).fetchall()[0][0]
else:
    out["everywhere_victim_rows"] = 0
print(json.dumps(out))

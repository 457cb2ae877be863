#!/usr/bin/env python3
"""What an analyst gets from the vitalsink archive with DuckDB.

Usage: archive_totals.py ROOT [DATE]
  ROOT  the archive root: a local directory, or s3://bucket/prefix (then the environment
        gives S3_ENDPOINT, e.g. http://127.0.0.1:18333, and AWS_ACCESS_KEY_ID /
        AWS_SECRET_ACCESS_KEY). S3 is read by DuckDB's own httpfs extension, loaded offline
        from the PyPI wheel duckdb-extension-httpfs (via duckdb-extensions).
  DATE  optional YYYY-MM-DD: also count the rows of that Hive partition (date pruning).

Prints one JSON object: per participant [rows, sum of value], the type DuckDB gives `ts`,
the Hive partitions seen, rows out of sort order within their file, and the files read for
the DATE query.
"""
import json
import os
import sys

import duckdb

root = sys.argv[1].rstrip("/")
con = duckdb.connect()
if root.startswith("s3://"):
    from duckdb_extensions import import_extension

    import_extension("httpfs", con=con)
    con.execute("LOAD httpfs")
    endpoint = os.environ["S3_ENDPOINT"]
    host = endpoint.split("://", 1)[1]
    con.execute(
        "CREATE SECRET s3 (TYPE s3, KEY_ID ?, SECRET ?, REGION 'us-east-1', ENDPOINT ?, "
        "URL_STYLE 'path', USE_SSL ?)",
        [
            os.environ.get("AWS_ACCESS_KEY_ID", "vitalsink"),
            os.environ.get("AWS_SECRET_ACCESS_KEY", "vitalsink"),
            host,
            endpoint.startswith("https://"),
        ],
    )

src = f"read_parquet('{root}/measurements/**/*.parquet', hive_partitioning = true)"
out = {
    "totals": {
        pid: [n, s]
        for pid, n, s in con.execute(
            f"SELECT participant_id, count(*), sum(value) FROM {src} GROUP BY 1"
        ).fetchall()
    },
    "ts_type": con.execute(f"SELECT DISTINCT typeof(ts) FROM {src}").fetchall()[0][0],
    "partitions": sorted(
        f"date={d}/shard={s}"
        for d, s in con.execute(f"SELECT DISTINCT date::VARCHAR, shard FROM {src}").fetchall()
    ),
}
# Rows out of (participant_id, metric, ts) byte order within their file (must be 0).
out["unsorted_rows"] = con.execute(
    f"""SELECT count(*) FROM (
          SELECT participant_id AS p, metric AS m, ts AS t,
                 lag(participant_id) OVER w AS pp, lag(metric) OVER w AS pm, lag(ts) OVER w AS pt
            FROM read_parquet('{root}/measurements/**/*.parquet', filename = true,
                              file_row_number = true)
          WINDOW w AS (PARTITION BY filename ORDER BY file_row_number))
        WHERE pp > p OR (pp = p AND (pm > m OR (pm = m AND pt > t)))"""
).fetchall()[0][0]
if len(sys.argv) > 2:
    day = sys.argv[2]
    out["day_rows"] = con.execute(
        f"SELECT count(*) FROM {src} WHERE date = ?::DATE", [day]
    ).fetchall()[0][0]
    files = con.execute(
        f"SELECT DISTINCT filename FROM read_parquet('{root}/measurements/**/*.parquet', "
        "hive_partitioning = true, filename = true) WHERE date = ?::DATE",
        [day],
    ).fetchall()
    out["day_files"] = len(files)
print(json.dumps(out))

#!/usr/bin/env python3
"""An auditor's own check of the archive: recomputes each object's `blake3-col` checksum with
pyarrow and the `blake3` package, from the description in the README and
archiver/src/export/checksum/columnar.rs, without the archiver's code.

Usage: archive_checksum.py ROOT
  ROOT  a local archive root (the folder holding measurements/).

Prints one JSON object: objects (Parquet files found), matched, mismatched (paths whose
recomputed checksum differs from their footer's `vitalsink.checksum`), other (paths whose
checksum names another algorithm, `blake3:` or `sha256:`, which this script does not
recompute) and missing (paths without a checksum in their footer). Exit status 1 when any
object mismatched or has no checksum.
"""
import json
import os
import sys

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DOMAIN = b"vitalsink blake3-col 1\0"
# Little-endian bytes of each number column's present values (`value` as the f64's bits).
NUMBER = {
    pa.int16(): "<i2",
    pa.int32(): "<i4",
    pa.int64(): "<i8",
    pa.float64(): "<f8",
}


def runs(keys):
    """Maximal runs of equal keys: [(length, key)]."""
    out = []
    for k in keys:
        if out and out[-1][1] == k:
            out[-1][0] += 1
        else:
            out.append([1, k])
    return out


def string_digest(col):
    h = blake3.blake3()
    for n, v in runs(col.to_pylist()):
        h.update(n.to_bytes(8, "little"))
        if v is None:
            h.update(b"\0")
        else:
            b = v.encode()
            h.update(b"\1" + len(b).to_bytes(4, "little") + b)
    return h.digest()


def number_digests(col):
    if pa.types.is_timestamp(col.type):
        assert col.type.unit == "us", col.type
        col = pc.cast(col, pa.int64())
    presence = blake3.blake3()
    for n, present in runs(col.is_valid().to_pylist()):
        presence.update(n.to_bytes(8, "little") + (b"\1" if present else b"\0"))
    values = np.asarray(col.drop_null().to_numpy(zero_copy_only=False), dtype=NUMBER[col.type])
    return presence.digest() + blake3.blake3(values.tobytes()).digest()


def checksum(table):
    # An object without rows hashes as no columns.
    columns = table.columns if table.num_rows else []
    h = blake3.blake3()
    h.update(DOMAIN)
    h.update(len(columns).to_bytes(4, "little"))
    h.update(table.num_rows.to_bytes(8, "little"))
    for col in columns:
        col = col.combine_chunks()
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            h.update(string_digest(col))
        else:
            h.update(number_digests(col))
    return "blake3-col:" + h.hexdigest()


def main(root):
    out = {"objects": 0, "matched": 0, "mismatched": [], "other": [], "missing": []}
    for dirpath, _, files in sorted(os.walk(os.path.join(root, "measurements"))):
        for f in sorted(files):
            if not f.endswith(".parquet"):
                continue
            path = os.path.join(dirpath, f)
            out["objects"] += 1
            pf = pq.ParquetFile(path)
            meta = pf.metadata.metadata or {}
            recorded = meta.get(b"vitalsink.checksum", b"").decode()
            if not recorded:
                out["missing"].append(path)
            elif not recorded.startswith("blake3-col:"):
                out["other"].append(path)
            elif checksum(pf.read()) == recorded:
                out["matched"] += 1
            else:
                out["mismatched"].append(path)
    print(json.dumps(out))
    return 1 if out["mismatched"] or out["missing"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

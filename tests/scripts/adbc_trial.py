"""The trial tables of `query serve` through ADBC's Flight SQL driver, as an analyst reads them.

Usage: adbc_trial.py ADDR SQL [SQL ...]

Runs each SQL against grpc://ADDR and prints one JSON object: `results`, one per SQL, each
with the Arrow schema the driver received (`types`: column -> Arrow type text), the rows as
pyarrow gives them (`rows`; timestamps as ISO 8601 text, lists as lists), and what pandas
makes of them (`dtypes`, and `py_types`: column -> Python type name of the first row's value);
and `tables`: the tables `adbc_get_objects` lists (name -> column names)."""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql

addr, statements = sys.argv[1], sys.argv[2:]
out = {"results": []}


def plain(v):
    if isinstance(v, list):
        return [plain(x) for x in v]
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


with flightsql.connect(f"grpc://{addr}") as conn:
    for sql in statements:
        with conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        df = table.to_pandas()
        rows = [{k: plain(v) for k, v in r.items()} for r in table.to_pylist()]
        first = df.iloc[0].to_dict() if len(df) else {}
        out["results"].append({
            "sql": sql,
            "types": {f.name: str(f.type) for f in table.schema},
            "rows": rows,
            "dtypes": {c: str(t) for c, t in df.dtypes.items()},
            "py_types": {c: type(v).__name__ for c, v in first.items()},
        })
    tables = {}
    for cat in conn.adbc_get_objects(depth="all").read_all().to_pylist():
        for sch in cat["catalog_db_schemas"] or []:
            for t in sch["db_schema_tables"] or []:
                if sch["db_schema_name"] == "public":
                    tables[t["table_name"]] = [c["column_name"] for c in t["table_columns"] or []]
    out["tables"] = tables
print(json.dumps(out))

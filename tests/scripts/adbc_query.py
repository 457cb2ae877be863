"""The analysts' client of `query serve`: ADBC's Flight SQL driver (adbc-driver-flightsql,
the Go driver ADBC ships) straight into pandas.

Usage: adbc_query.py ADDR SQL [PARTICIPANT]

Runs SQL against grpc://ADDR and prints the result as JSON records, plus the pandas dtypes,
so the Rust test can compare it with the CLI's answer. With PARTICIPANT it also does what a
tool does on connecting and what JDBC's PreparedStatement does: the catalog calls
(adbc_get_info, adbc_get_objects, adbc_get_table_schema) and a prepared statement with a
bound `$1` (count and sum of that participant's rows).

Environment: ADBC_TLS_CA (a PEM file) connects with grpc+tls and trusts only that CA;
ADBC_USER with ADBC_PASSWORD_FILE logs in (Flight SQL basic auth, then the bearer token)."""

import json
import os
import sys

import adbc_driver_flightsql.dbapi as flightsql

addr, sql = sys.argv[1], sys.argv[2]
participant = sys.argv[3] if len(sys.argv) > 3 else None
out = {}
kwargs = {}
scheme = "grpc"
if os.environ.get("ADBC_TLS_CA"):
    scheme = "grpc+tls"
    with open(os.environ["ADBC_TLS_CA"]) as f:
        kwargs["adbc.flight.sql.client_option.tls_root_certs"] = f.read()
if os.environ.get("ADBC_USER"):
    kwargs["username"] = os.environ["ADBC_USER"]
    with open(os.environ["ADBC_PASSWORD_FILE"]) as f:
        kwargs["password"] = f.read().strip()
with flightsql.connect(f"{scheme}://{addr}", db_kwargs=kwargs) as conn:
    with conn.cursor() as cur:
        cur.execute(sql)
        df = cur.fetch_df()
    out["rows"] = json.loads(df.to_json(orient="records"))
    out["dtypes"] = {c: str(t) for c, t in df.dtypes.items()}
    out["type"] = type(df).__module__ + "." + type(df).__name__
    if participant is not None:
        out["info"] = {str(k): str(v) for k, v in conn.adbc_get_info().items()}
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        tables = []
        for cat in objects:
            for sch in cat["catalog_db_schemas"] or []:
                for t in sch["db_schema_tables"] or []:
                    tables.append({
                        "catalog": cat["catalog_name"],
                        "schema": sch["db_schema_name"],
                        "table": t["table_name"],
                        "type": t["table_type"],
                        "columns": [c["column_name"] for c in t["table_columns"] or []],
                    })
        out["tables"] = tables
        out["table_schema"] = conn.adbc_get_table_schema("measurements").names
        with conn.cursor() as cur:
            cur.adbc_prepare(
                "SELECT count(*) AS n, sum(value) AS s FROM measurements WHERE participant_id = $1")
            cur.execute(
                "SELECT count(*) AS n, sum(value) AS s FROM measurements WHERE participant_id = $1",
                parameters=(participant,))
            out["prepared"] = json.loads(cur.fetch_df().to_json(orient="records"))
print(json.dumps(out))

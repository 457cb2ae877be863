"""The analysts' client of `query serve`: ADBC's Flight SQL driver (adbc-driver-flightsql,
the Go driver ADBC ships) straight into pandas. Runs the SQL given as the second argument
against grpc://ADDR (first argument) and prints the result as JSON records, plus the
pandas dtypes, so the Rust test can compare it with the CLI's answer."""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql

addr, sql = sys.argv[1], sys.argv[2]
with flightsql.connect(f"grpc://{addr}") as conn:
    with conn.cursor() as cur:
        cur.execute(sql)
        df = cur.fetch_df()
print(json.dumps({
    "rows": json.loads(df.to_json(orient="records")),
    "dtypes": {c: str(t) for c, t in df.dtypes.items()},
    "type": type(df).__module__ + "." + type(df).__name__,
}))

"""A curious, careless or hurried analyst against `query serve`, through ADBC's Flight SQL
driver (adbc-driver-flightsql, the Go driver ADBC ships): what issue 24 tried.

Usage: adbc_guard.py MODE ADDR [ARGS...]; prints one JSON object.

  hostile ADDR SECRET_FILE WRITE_DIR
      As ADBC_USER: every hostile statement below; each one's error class, ADBC status and
      message. SECRET_FILE is a file on the server the statements try to read; WRITE_DIR a
      directory they try to write into.
  sums ADDR
      As ADBC_USER: per-participant count and sum (the second analyst's check).
  prepared ADDR PARTICIPANT
      As ADBC_USER: a prepared statement with PARTICIPANT bound to $1 (count and sum).
  login ADDR
      As ADBC_USER with ADBC_PASSWORD_FILE's password: `SELECT 1`, or the error.
  timeout ADDR SQL
      Runs SQL; its error and the seconds it took.
  cancel ADDR SQL AFTER_S PID
      Starts SQL in a thread, calls cursor.adbc_cancel() (ADBC's statement cancel) after
      AFTER_S seconds, then samples the server process PID's CPU time (utime + stime from
      /proc/PID/stat) every 0.5 s for 8 s; then runs `SELECT 1` to check the server answers.
  flight_cancel ADDR SQL AFTER_S PID OTHER_USER OTHER_PASSWORD_FILE
      Flight's own cancel, with pyarrow.flight (Arrow's C++ Flight client): GetFlightInfo of
      SQL, DoGet in a thread, after AFTER_S seconds the action CancelFlightInfo with that
      FlightInfo, first as OTHER_USER (must not cancel another's statement), then as
      ADBC_USER; the statuses (CancelStatus: 1 cancelled, 3 not cancellable), the reader's
      error and the server's CPU after, as in `cancel`.
  concurrent ADDR N SQL
      N clients at once, each its own connection, each running SQL; per client the rows or
      the error.

Environment: ADBC_USER with ADBC_PASSWORD_FILE logs in (Flight SQL basic auth, then the
bearer token)."""

import json
import os
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql


def connect(addr, user=None, password=None):
    kwargs = {}
    user = user or os.environ.get("ADBC_USER")
    if user:
        kwargs["username"] = user
        if password is None:
            with open(os.environ["ADBC_PASSWORD_FILE"]) as f:
                password = f.read().strip()
        kwargs["password"] = password
    return flightsql.connect(f"grpc://{addr}", db_kwargs=kwargs)


def error(e):
    return {
        "class": type(e).__name__,
        "status": str(getattr(e, "status_code", "")),
        "message": str(e),
    }


def run(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def hostile(addr, secret, write_dir):
    out = []
    target = os.path.join(write_dir, "written.csv")
    statements = [
        # server file read
        f"CREATE EXTERNAL TABLE leak (line VARCHAR) STORED AS CSV LOCATION '{secret}'",
        f"CREATE EXTERNAL TABLE leak2 STORED AS PARQUET LOCATION '{os.path.dirname(secret)}/'",
        f"SELECT * FROM '{secret}'",
        f"SELECT * FROM 'file://{secret}'",
        # server file write
        f"COPY (SELECT participant_id FROM measurements LIMIT 10) TO '{target}' STORED AS CSV",
        f"COPY measurements TO '{write_dir}/all.parquet'",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{target}' STORED AS CSV",
        f"INSERT INTO measurements SELECT * FROM measurements LIMIT 1",
        # the table everyone sees
        "DROP TABLE measurements",
        "CREATE TABLE measurements AS SELECT 1 AS x",
        "CREATE OR REPLACE TABLE measurements AS SELECT 1 AS x",
        "CREATE VIEW v AS SELECT 1 AS x",
        "CREATE SCHEMA evil",
        "ALTER TABLE measurements RENAME TO m",
        "DELETE FROM measurements",
        "UPDATE measurements SET value = 0",
        "TRUNCATE TABLE measurements",
        "SELECT * INTO copied FROM measurements",
        # server settings
        "SET datafusion.execution.batch_size = 1",
        "SET datafusion.execution.target_partitions = 1000",
        "RESET datafusion.execution.batch_size",
        # functions
        "CREATE FUNCTION f(DOUBLE) RETURNS DOUBLE RETURN $1 + 1",
        "DROP FUNCTION f",
        # session state
        "PREPARE p AS SELECT 1",
        "BEGIN TRANSACTION",
        # URL or path table functions (DuckDB's and datafusion-cli's names)
        f"SELECT * FROM read_csv('{secret}')",
        f"SELECT * FROM read_parquet('{secret}')",
        f"SELECT * FROM read_json('{secret}')",
        f"SELECT * FROM parquet_metadata('{secret}')",
        f"SELECT count(*) FROM measurements m JOIN read_csv('{secret}') s ON true",
    ]
    with connect(addr) as conn:
        for sql in statements:
            entry = {"sql": sql, "expect": "refused"}
            try:
                entry["rows"] = run(conn, sql)
            except Exception as e:  # noqa: BLE001 - every error is reported
                entry["error"] = error(e)
            out.append(entry)
        # A prepared statement is checked like any other.
        try:
            with conn.cursor() as cur:
                cur.adbc_prepare("DROP TABLE measurements")
            out.append({"sql": "prepare DROP TABLE measurements", "expect": "refused",
                        "rows": []})
        except Exception as e:  # noqa: BLE001
            out.append({"sql": "prepare DROP TABLE measurements", "expect": "refused",
                        "error": error(e)})
        # The reads still work on the same connection afterwards.
        out.append({"sql": "SHOW TABLES", "expect": "ok", "rows": run(conn, "SHOW TABLES")})
    return {"statements": out, "written": sorted(os.listdir(write_dir))}


def sums(addr):
    with connect(addr) as conn:
        rows = run(conn, "SELECT participant_id, count(*) AS n, sum(value) AS s "
                         "FROM measurements GROUP BY participant_id")
    return {"rows": rows}


def prepared(addr, participant):
    sql = "SELECT count(*) AS n, sum(value) AS s FROM measurements WHERE participant_id = $1"
    with connect(addr) as conn, conn.cursor() as cur:
        cur.execute(sql, parameters=(participant,))
        return {"sql": sql, "rows": cur.fetch_arrow_table().to_pylist()}


def login(addr):
    try:
        with connect(addr) as conn:
            return {"rows": run(conn, "SELECT 1 AS one")}
    except Exception as e:  # noqa: BLE001
        return {"error": error(e)}


def timed(addr, sql):
    t = time.monotonic()
    out = {}
    try:
        with connect(addr) as conn:
            out["rows"] = run(conn, sql)
    except Exception as e:  # noqa: BLE001
        out["error"] = error(e)
    out["seconds"] = time.monotonic() - t
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def cancel(addr, sql, after, pid):
    out = {}
    conn = connect(addr)
    cur = conn.cursor()

    def work():
        try:
            cur.execute(sql)
            out["rows"] = len(cur.fetch_arrow_table())
        except Exception as e:  # noqa: BLE001
            out["error"] = error(e)

    th = threading.Thread(target=work)
    c0 = cpu_seconds(pid)
    th.start()
    time.sleep(after)
    c1 = cpu_seconds(pid)
    out["cpu_before_cancel"] = (c1 - c0) / after
    cur.adbc_cancel()
    t_cancel = time.monotonic()
    samples = []
    last = cpu_seconds(pid)
    for _ in range(16):
        time.sleep(0.5)
        now = cpu_seconds(pid)
        samples.append({"t": round(time.monotonic() - t_cancel, 2), "cpu": (now - last) / 0.5})
        last = now
    th.join(timeout=30)
    out["thread_done"] = not th.is_alive()
    out["cpu_after_cancel"] = samples
    try:
        cur.close()
        conn.close()
    except Exception:  # noqa: BLE001
        pass
    with connect(addr) as c2:
        out["next"] = run(c2, "SELECT 1 AS one")
    return out


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, payload):
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def flight_cancel(addr, sql, after, pid, other_user, other_pw_file):
    import pyarrow.flight as fl

    def options(user, pw_file):
        with open(pw_file) as f:
            pw = f.read().strip()
        client = fl.FlightClient(f"grpc://{addr}")
        header = client.authenticate_basic_token(user.encode(), pw.encode())
        return client, fl.FlightCallOptions(headers=[header])

    client, opts = options(os.environ["ADBC_USER"], os.environ["ADBC_PASSWORD_FILE"])
    other, other_opts = options(other_user, other_pw_file)
    # Any(CommandStatementQuery{query}) as the Flight SQL spec defines the descriptor.
    command = field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery")
    command += field(2, field(1, sql.encode()))
    info = client.get_flight_info(fl.FlightDescriptor.for_command(command), opts)
    out = {}

    def work():
        try:
            out["rows"] = client.do_get(info.endpoints[0].ticket, opts).read_all().num_rows
        except Exception as e:  # noqa: BLE001
            out["error"] = error(e)

    def cancel_as(c, o):
        body = field(1, info.serialize())
        results = list(c.do_action(fl.Action("CancelFlightInfo", body), o))
        raw = results[0].body.to_pybytes()
        return raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0

    def sleep(seconds):
        # pyarrow turns the reader thread's CANCELLED into a SIGINT for the process (its
        # signal-based stop); the KeyboardInterrupt lands in whatever this thread is doing.
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                time.sleep(left)
            except KeyboardInterrupt:
                out["interrupted"] = True

    th = threading.Thread(target=work)
    c0 = cpu_seconds(pid)
    th.start()
    sleep(after)
    out["cpu_before_cancel"] = (cpu_seconds(pid) - c0) / after
    out["other_user_status"] = cancel_as(other, other_opts)
    sleep(1)
    out["cpu_after_other"] = (cpu_seconds(pid) - c0) / (after + 1)
    out["status"] = cancel_as(client, opts)
    t_cancel = time.monotonic()
    samples = []
    last = cpu_seconds(pid)
    for _ in range(16):
        sleep(0.5)
        now = cpu_seconds(pid)
        samples.append({"t": round(time.monotonic() - t_cancel, 2), "cpu": (now - last) / 0.5})
        last = now
    th.join(timeout=30)
    out["cpu_after_cancel"] = samples
    out["again_status"] = cancel_as(client, opts)
    return out


def concurrent(addr, n, sql):
    results = [None] * n
    barrier = threading.Barrier(n)

    def client(i):
        try:
            with connect(addr) as conn:
                barrier.wait()
                t = time.monotonic()
                results[i] = {"rows": run(conn, sql)}
                results[i]["seconds"] = time.monotonic() - t
        except Exception as e:  # noqa: BLE001
            results[i] = {"error": error(e)}

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clients": results}


mode, addr = sys.argv[1], sys.argv[2]
if mode == "hostile":
    result = hostile(addr, sys.argv[3], sys.argv[4])
elif mode == "sums":
    result = sums(addr)
elif mode == "prepared":
    result = prepared(addr, sys.argv[3])
elif mode == "login":
    result = login(addr)
elif mode == "timeout":
    result = timed(addr, sys.argv[3])
elif mode == "cancel":
    result = cancel(addr, sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
elif mode == "flight_cancel":
    result = flight_cancel(addr, sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
                           sys.argv[7])
elif mode == "concurrent":
    result = concurrent(addr, int(sys.argv[3]), sys.argv[4])
else:
    sys.exit(f"unknown mode {mode}")
print(json.dumps(result, default=str))

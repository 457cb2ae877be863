//! Issue 24, the query server as a curious, careless or hurried analyst uses it, through
//! ADBC's Flight SQL driver (tests/scripts/adbc_guard.py) against `query serve` on the real
//! recordings over shards + archive (what `dev/run` builds), with two analyst accounts:
//! - every hostile statement (a server file read, a server file write, DROP/CREATE/ALTER,
//!   INSERT, DELETE, SET, CREATE FUNCTION, URL and path table functions) is refused with
//!   `PERMISSION_DENIED`, no file is read or written, and the second analyst's
//!   per-participant counts and sums still equal `truth.json`; `query sql` refuses them too;
//! - a statement that would run for hours ends at `--statement-timeout`; a cancelled one
//!   stops using CPU within seconds (measured from /proc) and the server answers the next;
//! - memory DataFusion's pool does not count (a join collecting column-less batches) is
//!   stopped by the RSS guard with `RESOURCE_EXHAUSTED`;
//! - 20 clients at once against `--max-concurrent-queries 4`: every answer exact or
//!   `RESOURCE_EXHAUSTED`; each server's peak RSS stays under its bound (printed);
//! - every statement is in the access record under the right user; a wrong password is
//!   refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use vitalsink_tests::ingest_run::{log_tail, peak_rss_bytes};
use vitalsink_tests::query_run::{
    add_user, assert_sums, message, metric, query_binary, rss, sums_of, RealDeployment, Server,
};
use vitalsink_tests::Stack;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/adbc_guard.py");
/// The memory pool the server runs with, bytes.
const MEMORY_BYTES: u64 = 256 << 20;
/// What the process may hold beyond the pool (`vitalsink_query::flight::memory::PROCESS_BYTES`),
/// where its memory guard stops the running statements.
const PROCESS_BYTES: u64 = 192 << 20;
/// How far RSS may overshoot that bound before the guard's next reading (every 100 ms) and the
/// stopped statement's memory is freed.
const REACTION_BYTES: u64 = 64 << 20;
/// A self join three times over: hours at any size this test has. Written so that each join
/// holds one table's rows (tracked by the pool) and streams the rest: memory stays flat.
const FOREVER: &str = "SELECT count(*) AS n FROM measurements a CROSS JOIN \
                       (SELECT b.value FROM measurements b CROSS JOIN measurements c) bc";
/// The same join left-deep without columns: the outer join collects N² rows of batches with
/// no columns, which DataFusion's pool counts as 0 bytes; RSS grows by about 50 MiB/s.
const BLOWUP: &str = "SELECT count(*) AS n FROM measurements a, measurements b, measurements c";
const SUMS: &str = "SELECT participant_id, count(*) AS n, sum(value) AS s FROM measurements GROUP BY participant_id";

/// Runs the script as `user` (password from `pw_file`); its JSON.
fn adbc(user: &str, pw_file: &Path, args: &[&str], log: &Path) -> Value {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .env("ADBC_USER", user)
        .env("ADBC_PASSWORD_FILE", pw_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "adbc_guard {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tail(log)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_server_refuses_writes_ends_runaways_and_records_who_asked() {
    let _stack = vitalsink_tests::stack_lock::exclusive().await;
    let stack = Stack::from_env();
    let (dep, config) = RealDeployment::archived(&stack, "t_qguard").await;
    let d = dep.dir.path();
    let truth = &dep.truth;

    // Two analysts; the server's own secret file and a directory it could write into.
    let users = d.join("analysts.users");
    add_user(&users, "alice", "alice-pw-1");
    add_user(&users, "bob", "bob-password-22");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        !text.contains("alice-pw-1") && text.contains("alice:$argon2id$"),
        "hashed: {text}"
    );
    let pw = |name: &str, pw: &str| {
        let p = d.join(format!("{name}.pw"));
        std::fs::write(&p, pw).unwrap();
        p
    };
    let (alice, bob, wrong) = (
        pw("alice", "alice-pw-1"),
        pw("bob", "bob-password-22"),
        pw("wrong", "bob-password-23"),
    );
    let secret = d.join("server-secret.txt");
    let secret_text = "root:the-server-secret-7f3a";
    std::fs::write(&secret, secret_text).unwrap();
    let write_dir = d.join("writable");
    std::fs::create_dir(&write_dir).unwrap();
    let access = d.join("access.jsonl");
    let flog = d.join("flight.log");
    let server = Server::start(
        &config,
        &[
            "--memory-bytes",
            &MEMORY_BYTES.to_string(),
            "--statement-timeout",
            "20s",
            "--access-log",
            access.to_str().unwrap(),
        ],
        &[
            "--users-file",
            users.to_str().unwrap(),
            "--max-concurrent-queries",
            "4",
            "--queue-timeout",
            "1s",
        ],
        &flog,
    )
    .await;
    let addr = server.addr.clone();
    let pid = server.child.id();

    // 1. Hostile statements: each PERMISSION_DENIED (ADBC's UNAUTHORIZED), nothing read or
    // written; then the other analyst's answer is still exact.
    let got = adbc(
        "alice",
        &alice,
        &[
            "hostile",
            &addr,
            secret.to_str().unwrap(),
            write_dir.to_str().unwrap(),
        ],
        &flog,
    );
    let statements = got["statements"].as_array().unwrap();
    let mut refused = 0;
    for s in statements {
        let sql = s["sql"].as_str().unwrap();
        let text = s.to_string();
        assert!(!text.contains(secret_text), "{sql} read the secret: {text}");
        if s["expect"] == "ok" {
            // SHOW TABLES after them all: the catalog is as it was.
            let public: Vec<&str> = s["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["table_schema"] == "public")
                .map(|t| t["table_name"].as_str().unwrap())
                .collect();
            assert_eq!(
                public,
                [
                    "audit_log",
                    "measurements",
                    "participant_status_changes",
                    "participants"
                ],
                "{text}"
            );
            continue;
        }
        assert!(
            message(s).contains("PermissionDenied") && message(s).contains("refused"),
            "{sql}: not PERMISSION_DENIED: {text}"
        );
        refused += 1;
    }
    assert!(refused >= 30, "{refused} hostile statements");
    assert_eq!(got["written"], serde_json::json!([]), "a file was written");
    assert_eq!(std::fs::read_dir(&write_dir).unwrap().count(), 0);
    let bob_sums = adbc("bob", &bob, &["sums", &addr], &flog);
    assert_sums(
        &sums_of(&bob_sums["rows"]),
        &truth.participants,
        "bob after alice's hostile statements",
    );
    // The CLI refuses them too, before touching anything.
    let target = write_dir.join("cli.csv");
    for sql in [
        "DROP TABLE measurements".to_string(),
        format!("COPY (SELECT 1) TO '{}' STORED AS CSV", target.display()),
        format!("SELECT * FROM '{}'", secret.display()),
    ] {
        let out = Command::new(query_binary())
            .arg("--config")
            .arg(&config)
            .args(["sql", &sql])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sql}: {err}");
        assert!(err.contains("refused"), "{sql}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(secret_text));
    }
    assert!(!target.exists());

    rss(pid, "hostile statements and sums");
    // A prepared statement's bound value is used, and not recorded.
    let (who, (want_n, _)) = truth.participants.iter().next().unwrap();
    let prep = adbc("bob", &bob, &["prepared", &addr, who], &flog);
    assert_eq!(prep["rows"][0]["n"].as_i64(), Some(*want_n), "{prep}");

    // 2. A wrong password is refused; the right one still works.
    let bad = adbc("bob", &wrong, &["login", &addr], &flog);
    assert!(
        message(&bad).contains("Unauthenticated"),
        "wrong password: {bad}"
    );
    let good = adbc("bob", &bob, &["login", &addr], &flog);
    assert_eq!(good["rows"][0]["one"], 1, "{good}");

    rss(pid, "logins");
    // 3. A statement that would run for hours ends at the statement timeout.
    let ended = |sql: &str, what: &str, code: &str, why: &str| {
        let v = adbc("alice", &alice, &["timeout", &addr, sql], &flog);
        eprintln!("{what}: ended after {:.1} s: {}", v["seconds"], message(&v));
        assert!(
            message(&v).contains(code) && message(&v).contains(why),
            "{what}: {v}"
        );
    };
    ended(
        FOREVER,
        "statement timeout",
        "DeadlineExceeded",
        "--statement-timeout",
    );

    rss(pid, "the statement timeout");
    // 4. A cancelled statement stops using CPU within seconds; the server answers the next.
    let c = adbc(
        "alice",
        &alice,
        &["cancel", &addr, FOREVER, "4", &pid.to_string()],
        &flog,
    );
    eprintln!("cancel: {c}");
    assert!(
        c["cpu_before_cancel"].as_f64().unwrap() > 0.5,
        "the statement was running before the cancel: {c}"
    );
    let samples = c["cpu_after_cancel"].as_array().unwrap();
    let quiet_from = samples
        .iter()
        .position(|s| s["cpu"].as_f64().unwrap() < 0.1)
        .map(|i| samples[i]["t"].as_f64().unwrap());
    eprintln!("cancel: server CPU under 0.1 core from {quiet_from:?} s after the cancel");
    for s in &samples[samples.len() - 4..] {
        assert!(
            s["cpu"].as_f64().unwrap() < 0.1,
            "still working 6-8 s after the cancel: {c}\n{}",
            log_tail(&flog)
        );
    }
    assert!(
        c["error"].is_object(),
        "the cancelled statement failed: {c}"
    );
    assert_eq!(c["next"][0]["one"], 1, "{c}");
    // Flight's own CancelFlightInfo (pyarrow.flight): another analyst cannot cancel alice's
    // statement; she can, and it stops.
    let f = adbc(
        "alice",
        &alice,
        &[
            "flight_cancel",
            &addr,
            FOREVER,
            "3",
            &pid.to_string(),
            "bob",
            bob.to_str().unwrap(),
        ],
        &flog,
    );
    eprintln!("CancelFlightInfo: {f}");
    assert_eq!(f["other_user_status"], 3, "NOT_CANCELLABLE for bob: {f}");
    assert!(
        f["cpu_after_other"].as_f64().unwrap() > 0.5,
        "still running: {f}"
    );
    assert_eq!(f["status"], 1, "CANCELLED for alice: {f}");
    assert_eq!(f["again_status"], 3, "nothing left to cancel: {f}");
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cancel"),
        "the reader ended with the cancel: {f}"
    );
    let samples = f["cpu_after_cancel"].as_array().unwrap();
    for s in &samples[samples.len() - 4..] {
        assert!(
            s["cpu"].as_f64().unwrap() < 0.1,
            "still working after CancelFlightInfo: {f}"
        );
    }

    rss(pid, "the cancel");
    // 5. Memory the pool does not see: the guard stops the statement at the RSS bound. A
    // server of its own, with a small pool and no timeout in the way: how fast RSS grows
    // depends on the CPU the machine has free.
    let mlog = d.join("flight-memory.log");
    let maccess = d.join("access-memory.jsonl");
    let small: u64 = 64 << 20;
    let mserver = Server::start(
        &config,
        &[
            "--memory-bytes",
            &small.to_string(),
            "--statement-timeout",
            "10m",
            "--access-log",
            maccess.to_str().unwrap(),
        ],
        &["--users-file", users.to_str().unwrap()],
        &mlog,
    )
    .await;
    let m = adbc("alice", &alice, &["timeout", &mserver.addr, BLOWUP], &mlog);
    eprintln!(
        "memory guard: ended after {:.1} s: {}",
        m["seconds"],
        message(&m)
    );
    assert!(
        message(&m).contains("ResourceExhausted") && message(&m).contains("resident memory"),
        "{m}"
    );
    rss(mserver.child.id(), "the memory guard (its own server)");
    let again = adbc("bob", &bob, &["sums", &mserver.addr], &mlog);
    assert_sums(
        &sums_of(&again["rows"]),
        &truth.participants,
        "after the memory guard",
    );
    let mpeak = peak_rss_bytes(mserver.child.id()).unwrap();
    eprintln!(
        "memory guard: peak RSS {} MiB, bound {} MiB (pool {} MiB + process {} MiB + guard reaction {} MiB)",
        mpeak >> 20,
        (small + PROCESS_BYTES + REACTION_BYTES) >> 20,
        small >> 20,
        PROCESS_BYTES >> 20,
        REACTION_BYTES >> 20
    );
    assert!(
        mpeak < small + PROCESS_BYTES + REACTION_BYTES,
        "peak RSS {mpeak}"
    );
    mserver.stop();
    let mrecords = std::fs::read_to_string(&maccess).unwrap();
    assert_eq!(
        mrecords
            .lines()
            .filter(|l| l.contains("\"outcome\":\"memory\"") && l.contains("\"user\":\"alice\""))
            .count(),
        1,
        "{mrecords}"
    );

    // 6. 20 clients at once, 4 slots, 1 s of queue: exact or RESOURCE_EXHAUSTED, never wrong.
    let conc = adbc("bob", &bob, &["concurrent", &addr, "20", SUMS], &flog);
    let (mut exact, mut busy) = (0, 0);
    for r in conc["clients"].as_array().unwrap() {
        if r["rows"].is_array() {
            assert_sums(
                &sums_of(&r["rows"]),
                &truth.participants,
                "a concurrent client",
            );
            exact += 1;
        } else {
            assert!(
                message(r).contains("ResourceExhausted")
                    && message(r).contains("--max-concurrent-queries"),
                "neither exact nor RESOURCE_EXHAUSTED: {r}"
            );
            busy += 1;
        }
    }
    rss(pid, "20 concurrent clients");
    let peak = peak_rss_bytes(pid).unwrap();
    eprintln!(
        "20 clients, 4 slots: {exact} exact, {busy} RESOURCE_EXHAUSTED; server peak RSS over the whole test {} MiB, bound {} MiB (pool {} MiB + process {} MiB + guard reaction {} MiB)",
        peak >> 20,
        (MEMORY_BYTES + PROCESS_BYTES + REACTION_BYTES) >> 20,
        MEMORY_BYTES >> 20,
        PROCESS_BYTES >> 20,
        REACTION_BYTES >> 20
    );
    assert!(exact >= 4, "{conc}");
    assert!(busy >= 1, "the slots never filled: {conc}");
    assert!(
        peak < MEMORY_BYTES + PROCESS_BYTES + REACTION_BYTES,
        "peak RSS {peak}"
    );

    // 7. Who asked what: the access record and the metrics.
    let metrics = server.metrics().await;
    server.stop();
    let records: Vec<Value> = std::fs::read_to_string(&access)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |user: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r["user"] == user && r["outcome"] == outcome)
            .collect::<Vec<_>>()
    };
    assert!(of("alice", "refused").len() >= refused, "{records:?}");
    assert!(of("bob", "refused").is_empty(), "{records:?}");
    for r in of("alice", "refused") {
        assert!(r["rows"] == 0 && r["error"].as_str().unwrap().contains("refused"));
    }
    let bob_ok: Vec<_> = of("bob", "ok")
        .into_iter()
        .filter(|r| r["sql"] == SUMS)
        .collect();
    assert_eq!(bob_ok.len(), 1 + exact, "bob's sums: {records:?}");
    for r in &bob_ok {
        assert_eq!(r["rows"], truth.participants.len(), "{r}");
        assert!(r["bytes"].as_u64().unwrap() > 0 && r["ms"].is_u64(), "{r}");
    }
    assert_eq!(of("bob", "busy").len(), busy, "{records:?}");
    let prep_rec: Vec<_> = of("bob", "ok")
        .into_iter()
        .filter(|r| r["sql"] == prep["sql"])
        .collect();
    assert_eq!(prep_rec.len(), 1, "{records:?}");
    assert_eq!(
        prep_rec[0]["params"],
        serde_json::json!(["$1: Utf8 (masked)"]),
        "{}",
        prep_rec[0]
    );
    assert!(
        !prep_rec[0].to_string().contains(who.as_str()),
        "{}",
        prep_rec[0]
    );
    assert_eq!(of("alice", "timeout").len(), 1, "{records:?}");
    assert_eq!(of("alice", "cancelled").len(), 2, "{records:?}");
    assert!(records
        .iter()
        .all(|r| r["at"].is_string() && r["sql"].is_string()));
    let count = |o: &str| {
        metric(
            &metrics,
            "vitalsink_query_statements_total",
            &format!("outcome=\"{o}\""),
        )
    };
    assert!(count("refused") >= refused as f64, "{metrics}");
    assert_eq!(count("busy"), busy as f64, "{metrics}");
    assert!(
        metric(
            &metrics,
            "vitalsink_query_logins_total",
            "outcome=\"refused\""
        ) >= 1.0,
        "{metrics}"
    );
    dep.dbs.drop_all().await;
}

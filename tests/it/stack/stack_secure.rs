//! The secure variant of the local stack (`STACK_SECURE=1 dev/stack up`), checked with real
//! outside clients: psql (libpq) for TimescaleDB, librdkafka (the `rdkafka` crate, `ssl`
//! feature) for the broker, curl (SigV4) for S3. Every login that should work works, and
//! plain connections, wrong passwords, an unknown CA and the wrong host name (`127.0.0.1`:
//! the certificate names only `localhost`) are refused, each for its own reason.
//!
//! These tests fail, never skip, when the secure stack's variables are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use vitalsink_tests::secure::{psql, SecureStack};
use vitalsink_tests::unique;

/// How long a client that must fail gets before we call it refused.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------- TimescaleDB

#[test]
fn pg_verify_full_scram_to_localhost_works() {
    let s = SecureStack::from_env();
    let pw = s.pg_admin_password();
    let out = psql(
        &s.pg_url("postgres"),
        &pw,
        "SELECT ssl, current_setting('password_encryption'), \
         (SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = current_user) \
         FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert!(
        out.status.success(),
        "verify-full + SCRAM to localhost: {}",
        stderr(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t|scram-sha-256|t",
        "TLS session, SCRAM password storage"
    );

    // A shard database with TimescaleDB, as the tests of the binaries make them.
    let db = unique("secure_pg");
    let out = psql(&s.pg_url("postgres"), &pw, &format!("CREATE DATABASE {db}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = psql(
        &s.pg_url(&db),
        &pw,
        "CREATE EXTENSION IF NOT EXISTS timescaledb; \
         CREATE TABLE m (ts timestamptz NOT NULL, v float8); \
         SELECT create_hypertable('m', by_range('ts', INTERVAL '1 day')); \
         SELECT extname FROM pg_extension WHERE extname = 'timescaledb'",
    );
    assert!(
        out.status.success(),
        "TimescaleDB on the secure cluster: {}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("timescaledb"));
    let out = psql(
        &s.pg_url("postgres"),
        &pw,
        &format!("DROP DATABASE {db} WITH (FORCE)"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `psql` on `url` with `password` must fail, its error containing `reason`.
fn assert_pg_refused(url: &str, password: &str, reason: &str, what: &str) {
    let out = psql(url, password, "SELECT 1");
    assert!(!out.status.success(), "{what} must be refused ({url})");
    assert!(
        stderr(&out).contains(reason),
        "{what}: expected {reason:?}, got {}",
        stderr(&out)
    );
}

#[test]
fn pg_plain_connection_is_refused() {
    let s = SecureStack::from_env();
    let url = format!(
        "host=localhost port={} user={} dbname=postgres sslmode=disable",
        s.pg_port, s.pg_admin_user
    );
    // pg_hba's `hostnossl ... reject`.
    assert_pg_refused(
        &url,
        &s.pg_admin_password(),
        "no encryption",
        "sslmode=disable",
    );
}

#[test]
fn pg_wrong_password_is_refused() {
    let s = SecureStack::from_env();
    assert_pg_refused(
        &s.pg_url("postgres"),
        "not-the-password",
        "password authentication failed",
        "a wrong password",
    );
}

#[test]
fn pg_unknown_ca_is_refused() {
    let s = SecureStack::from_env();
    let url = s.pg_url("postgres").replace(
        &format!("sslrootcert={}", s.ca.display()),
        &format!("sslrootcert={}", s.other_ca.display()),
    );
    assert!(url.contains("other-ca"), "{url}");
    assert_pg_refused(
        &url,
        &s.pg_admin_password(),
        "certificate verify failed",
        "a certificate of another CA",
    );
}

#[test]
fn pg_wrong_host_name_is_refused() {
    let s = SecureStack::from_env();
    let url = s
        .pg_url("postgres")
        .replace("host=localhost", "host=127.0.0.1");
    assert!(url.contains("host=127.0.0.1"), "{url}");
    // The certificate names localhost only.
    assert_pg_refused(
        &url,
        &s.pg_admin_password(),
        "does not match host name",
        "verify-full to 127.0.0.1",
    );
}

// ---------------------------------------------------------------- Kafka

/// librdkafka's reasons (its FAIL log lines and error callbacks): a failed TLS handshake or
/// login is reported only there.
#[derive(Default)]
struct Reasons(std::sync::Mutex<Vec<String>>);

impl rdkafka::client::ClientContext for Reasons {
    fn error(&self, _error: rdkafka::error::KafkaError, reason: &str) {
        self.0.lock().unwrap().push(reason.to_string());
    }

    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" {
            self.0.lock().unwrap().push(message.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Reasons {}

/// Fetches the cluster's metadata: the number of brokers, or librdkafka's reasons.
fn metadata_ok(config: &ClientConfig, within: Duration) -> Result<usize, String> {
    let c: BaseConsumer<Reasons> = config
        .create_with_context(Reasons::default())
        .map_err(|e| e.to_string())?;
    c.fetch_metadata(None, within)
        .map(|m| m.brokers().len())
        .map_err(|e| {
            // The reasons arrive as events of the client's queue.
            for _ in 0..5 {
                let _ = c.poll(Duration::from_millis(100));
            }
            format!("{e}: {}", c.context().0.lock().unwrap().join("; "))
        })
}

/// The client must get no metadata, and librdkafka must say `reason`.
fn assert_kafka_refused(config: &ClientConfig, reason: &str, what: &str) {
    match metadata_ok(config, REFUSED_WITHIN) {
        Ok(n) => panic!("{what}: got metadata ({n} brokers)"),
        Err(e) => assert!(e.contains(reason), "{what}: expected {reason:?}, got {e}"),
    }
}

async fn produce_and_consume(s: &SecureStack, mechanism: &str, user: &str, password: &str) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &s.kafka);
    for (k, v) in s.kafka_properties(mechanism, user, password) {
        config.set(k, v);
    }
    // The broker advertises localhost:29093, so every connection goes through TLS too.
    let brokers = metadata_ok(&config, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{mechanism} as {user} through {}: {e}", s.kafka));
    assert_eq!(brokers, 1);

    let topic = unique("secure-kafka");
    let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let producer: FutureProducer = config.clone().set("acks", "all").create().unwrap();
    for i in 0..10 {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("P0001")
                    .payload(&format!("{mechanism} {i}")),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", unique("secure-group"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "only {} of 10 records consumed",
            got.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.unwrap();
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(
        got,
        (0..10)
            .map(|i| format!("{mechanism} {i}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn kafka_sasl_ssl_scram_sha_512_produces_and_consumes() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let s = SecureStack::from_env();
    produce_and_consume(&s, "SCRAM-SHA-512", &s.kafka_user, &s.kafka_password()).await;
}

#[tokio::test]
async fn kafka_sasl_ssl_scram_sha_256_produces_and_consumes() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let s = SecureStack::from_env();
    produce_and_consume(
        &s,
        "SCRAM-SHA-256",
        &s.kafka256_user,
        &s.kafka256_password(),
    )
    .await;
}

#[test]
fn kafka_plaintext_client_to_the_tls_port_fails() {
    let s = SecureStack::from_env();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.kafka);
    // stunnel drops a client that does not start TLS (the SASL_SSL tests show it is up).
    assert_kafka_refused(&c, "brokers are down", "a PLAINTEXT client on the TLS port");
}

#[test]
fn kafka_tls_without_sasl_is_refused() {
    let s = SecureStack::from_env();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.kafka)
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", s.ca.display().to_string());
    // The broker (--authentication) closes a connection that sends requests before SASL.
    assert_kafka_refused(&c, "brokers are down", "TLS without SASL");
}

#[test]
fn kafka_unknown_ca_fails() {
    let s = SecureStack::from_env();
    let mut c = s.kafka_config(&s.kafka);
    c.set("ssl.ca.location", s.other_ca.display().to_string());
    assert_kafka_refused(
        &c,
        "certificate verify failed",
        "a broker certificate of another CA",
    );
}

#[test]
fn kafka_ip_bootstrap_fails_hostname_verification() {
    let s = SecureStack::from_env();
    let ip = s.kafka.replace("localhost", "127.0.0.1");
    assert!(ip.starts_with("127.0.0.1:"), "{ip}");
    let c = s.kafka_config(&ip);
    assert_eq!(
        c.get("ssl.endpoint.identification.algorithm"),
        None,
        "librdkafka's default (https) checks the host name"
    );
    // OpenSSL reports the host name mismatch as a failed verification.
    assert_kafka_refused(
        &c,
        "certificate verify failed",
        "127.0.0.1 (the certificate names localhost only)",
    );
}

#[test]
fn kafka_wrong_password_fails_for_librdkafka() {
    let s = SecureStack::from_env();
    let mut c = s.kafka_config(&s.kafka);
    c.set("sasl.password", "not-the-password");
    assert_kafka_refused(&c, "invalid-proof", "a wrong password");
    let mut c = s.kafka_config(&s.kafka);
    c.set("sasl.username", "nobody");
    assert_kafka_refused(&c, "unknown-user", "an unknown user");
}

/// Kafka wire protocol, by hand: one request (header v1), its response body.
fn call(
    conn: &mut TcpStream,
    corr: i32,
    api_key: i16,
    version: i16,
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut msg = Vec::new();
    msg.extend(api_key.to_be_bytes());
    msg.extend(version.to_be_bytes());
    msg.extend(corr.to_be_bytes());
    msg.extend(5i16.to_be_bytes());
    msg.extend(b"probe");
    msg.extend(body);
    let mut framed = (msg.len() as i32).to_be_bytes().to_vec();
    framed.extend(msg);
    conn.write_all(&framed)?;
    let mut size = [0u8; 4];
    conn.read_exact(&mut size)?;
    let mut data = vec![0u8; i32::from_be_bytes(size) as usize];
    conn.read_exact(&mut data)?;
    assert_eq!(i32::from_be_bytes(data[..4].try_into().unwrap()), corr);
    Ok(data[4..].to_vec())
}

fn kbytes(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as i32).to_be_bytes().to_vec();
    v.extend(b);
    v
}

/// The attack Tansu PR #696 fixed: finish a SCRAM-SHA-512 exchange with a wrong proof, ignore
/// the server's error and send a Metadata request. Returns whether the broker answered it.
fn admitted_after_wrong_proof(listener: &str, user: &str) -> bool {
    let mut conn =
        TcpStream::connect(listener).unwrap_or_else(|e| panic!("Tansu at {listener}: {e}"));
    conn.set_read_timeout(Some(REFUSED_WITHIN)).unwrap();
    let mech = b"SCRAM-SHA-512";
    let mut body = (mech.len() as i16).to_be_bytes().to_vec();
    body.extend(mech);
    let r = call(&mut conn, 1, 17, 1, &body).expect("SaslHandshake");
    assert_eq!(
        i16::from_be_bytes([r[0], r[1]]),
        0,
        "SCRAM-SHA-512 is offered"
    );

    let nonce = unique("nonce").replace('_', "");
    let first = format!("n,,n={user},r={nonce}");
    let r = call(&mut conn, 2, 36, 1, &kbytes(first.as_bytes()))
        .expect("SaslAuthenticate (client-first)");
    assert_eq!(i16::from_be_bytes([r[0], r[1]]), 0, "{user} is known");
    let msg_len = i16::from_be_bytes([r[2], r[3]]).max(0) as usize;
    let off = 4 + msg_len;
    let alen = i32::from_be_bytes(r[off..off + 4].try_into().unwrap()) as usize;
    let server_first = String::from_utf8(r[off + 4..off + 4 + alen].to_vec()).unwrap();
    let combined = server_first
        .split(',')
        .find_map(|kv| kv.strip_prefix("r="))
        .expect("server nonce");
    assert!(combined.starts_with(&nonce), "{server_first}");

    // A proof of the right length that is not the right one.
    let bogus = "A".repeat(86) + "==";
    let last = format!("c=biws,r={combined},p={bogus}");
    if call(&mut conn, 3, 36, 1, &kbytes(last.as_bytes())).is_err() {
        return false;
    }
    // Metadata v1, all topics.
    call(&mut conn, 4, 3, 1, &(-1i32).to_be_bytes()).is_ok()
}

#[test]
fn kafka_broker_and_a_client_that_ignores_a_wrong_proof() {
    let s = SecureStack::from_env();
    let admitted = admitted_after_wrong_proof(&s.tansu_listener, &s.kafka_user);
    // Tansu 0.6.0 (the secure stack's broker) answers such a client: its SCRAM server
    // finishes on a bad proof and 0.6.0 counted any finished exchange as authenticated
    // (upstream PR #696, in the 0.7 pre-releases, requires a validated identity). A
    // well-behaved client (librdkafka above) stops on the server's error, so a wrong password
    // still fails for it; a hostile one gets in. `dev/stack up` probes the same thing and
    // exports the answer; this asserts what the broker really does, whichever it is.
    assert_eq!(
        admitted, !s.tansu_refuses_wrong_password,
        "VITALSINK_SECURE_TANSU_REFUSES_WRONG_PASSWORD={} but the broker {} a client after a wrong proof",
        u8::from(s.tansu_refuses_wrong_password),
        if admitted { "admitted" } else { "refused" }
    );
}

// ---------------------------------------------------------------- S3

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl missing: run dev/setup")
}

/// The HTTP status of `curl ARGS` (body discarded).
fn http_status(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["-o", "/dev/null", "-w", "%{http_code}"]);
    let out = curl(&all);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out))
}

#[test]
fn s3_https_with_the_ca_and_the_identity_works() {
    let s = SecureStack::from_env();
    let (key, secret) = s.s3_credentials();
    let ca = s.ca.display().to_string();
    let sigv4 = format!("aws:amz:{}:s3", s.s3_region);
    let user = format!("{key}:{secret}");
    let wrong = format!("{key}:not-the-secret");
    let signed = ["--cacert", &ca, "--aws-sigv4", &sigv4, "--user", &user];
    let url = format!("{}/{}/{}", s.s3, s.s3_bucket, unique("secure-s3"));
    let body = format!("vitalsink secure stack {}", unique("body"));

    // An upload (-T): curl 7.88 signs a --data-binary body's form content type wrongly.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let path = file.path().display().to_string();
    assert_eq!(
        http_status(&[&signed[..], &["-T", &path, &url]].concat()),
        "200",
        "PUT over HTTPS"
    );
    let get = curl(&[&signed[..], &[url.as_str()]].concat());
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(String::from_utf8_lossy(&get.stdout), body);

    // Wrong secret and no signature at all are both refused (403).
    let bad = [
        "--cacert",
        &ca,
        "--aws-sigv4",
        &sigv4,
        "--user",
        &wrong,
        &url,
    ];
    assert_eq!(http_status(&bad), "403", "wrong secret");
    assert_eq!(http_status(&["--cacert", &ca, &url]), "403", "anonymous");
    assert_eq!(
        http_status(&[&signed[..], &["-X", "DELETE", &url]].concat()),
        "204",
        "DELETE"
    );
}

#[test]
fn s3_unknown_ca_wrong_host_and_plain_http_fail() {
    let s = SecureStack::from_env();
    let other = s.other_ca.display().to_string();
    let ca = s.ca.display().to_string();
    let healthz = format!("{}/healthz", s.s3);

    let ok = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &healthz,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "200",
        "{}",
        stderr(&ok)
    );
    // curl exit 60: the peer certificate cannot be verified.
    let unknown = curl(&["--cacert", &other, &healthz]);
    assert_eq!(
        unknown.status.code(),
        Some(60),
        "another CA: {}",
        stderr(&unknown)
    );
    let ip = curl(&["--cacert", &ca, &healthz.replace("localhost", "127.0.0.1")]);
    assert_eq!(ip.status.code(), Some(60), "127.0.0.1: {}", stderr(&ip));
    assert!(stderr(&ip).contains("127.0.0.1"), "{}", stderr(&ip));
    // The port speaks TLS only.
    let plain = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &healthz.replace("https://", "http://"),
    ]);
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "plain HTTP must not be served"
    );
}

// ---------------------------------------------------------------- the script itself

#[test]
fn env_and_status_never_print_a_secret() {
    let s = SecureStack::from_env();
    let (key, secret) = s.s3_credentials();
    let secrets = [
        s.pg_admin_password(),
        s.kafka_password(),
        s.kafka256_password(),
        key,
        secret,
    ];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/stack");
    for cmd in ["env", "status"] {
        let out = Command::new(script)
            .arg(cmd)
            .env("STACK_SECURE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "STACK_SECURE=1 dev/stack {cmd}: {}",
            stderr(&out)
        );
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        for secret in &secrets {
            assert!(secret.len() >= 32, "secrets are long random strings");
            assert!(
                !text.contains(secret.as_str()),
                "dev/stack {cmd} printed a secret"
            );
        }
    }
    for f in [
        &s.pg_admin_password_file,
        &s.kafka_password_file,
        &s.kafka256_password_file,
        &s.s3_access_key_file,
        &s.s3_secret_key_file,
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}

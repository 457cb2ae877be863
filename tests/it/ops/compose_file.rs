//! `compose/docker-compose.yml` cannot run here (no Docker engine), so it is checked for
//! what would break `docker compose up`: every service has a pinned image (a tag, not
//! `latest`) or a build, every file it mounts exists in the repository, every `depends_on`
//! and named volume exists, and the vitalsink services' configuration (the TOML file plus
//! their `VITALSINK_*` environment) loads and validates, with the shards as Patroni clusters
//! behind PgBouncer (multi-host `url`s through the PgBouncers with
//! `target_session_attrs=read-write`, `pooling = "transaction"`, `direct_urls` to the members
//! for the bulk lock, `replicas` read-only). It is also checked for the secure settings: TLS
//! verify-full to the shards, Kafka SASL_SSL, S3 over HTTPS, and every password a Docker
//! secret (a file the service mounts), none written in the files. The monitoring, Patroni,
//! PgBouncer and pgBackRest files of `compose/` are checked by `compose_ops.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Map, Value};
use std::path::Path;
use vitalsink_common::Config;

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose/docker-compose.yml");
    let mut yaml: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // `<<: *anchor` merge keys, as docker compose resolves them.
    yaml.apply_merge().unwrap();
    serde_json::to_value(yaml).unwrap()
}

/// `VITALSINK_KAFKA__BROKERS=x` → `{"kafka": {"brokers": "x"}}`, as the loader reads it.
fn env_to_overrides(env: &Map<String, Value>) -> Value {
    let mut root = Map::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("VITALSINK_") else {
            continue;
        };
        if rest == "CONFIG" {
            continue;
        }
        let (section, key) = rest
            .split_once("__")
            .unwrap_or_else(|| panic!("{k}: no section"));
        let s = root
            .entry(section.to_lowercase())
            .or_insert_with(|| Value::Object(Map::new()));
        s.as_object_mut()
            .unwrap()
            .insert(key.to_lowercase(), v.clone());
    }
    Value::Object(root)
}

#[test]
fn compose_file_is_consistent() {
    let doc = compose();
    let services = doc["services"].as_object().expect("services");
    let volumes = doc["volumes"].as_object().expect("volumes");
    let mut vitalsink_services = 0;
    for (name, svc) in services {
        match svc.get("image").and_then(Value::as_str) {
            Some(image) => {
                let tag = image
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .split_once(':')
                    .map(|(_, t)| t);
                assert!(
                    tag.is_some_and(|t| !t.is_empty() && t != "latest"),
                    "{name}: image {image} is not pinned to a tag"
                );
            }
            None => assert!(svc.get("build").is_some(), "{name}: no image or build"),
        }
        if let Some(deps) = svc.get("depends_on").and_then(Value::as_object) {
            for dep in deps.keys() {
                assert!(
                    services.contains_key(dep),
                    "{name} depends on unknown service {dep}"
                );
            }
        }
        for v in svc
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if src.starts_with('.') {
                let file = compose_dir().join(src);
                assert!(
                    file.exists(),
                    "{name}: mounts {src}, which is not in the repository"
                );
            } else {
                assert!(!src.starts_with('/'), "{name}: mounts the host path {src}");
                assert!(volumes.contains_key(src), "{name}: undeclared volume {src}");
            }
        }
        if let Some(env) = svc.get("environment").and_then(Value::as_object) {
            if env.contains_key("VITALSINK_CONFIG") {
                vitalsink_services += 1;
                let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/vitalsink.toml");
                let cfg = Config::load(Some(&toml), &env_to_overrides(env))
                    .unwrap_or_else(|e| panic!("{name}: configuration does not load: {e}"));
                assert_eq!(cfg.kafka.brokers, "kafka:9093");
                check_secure(
                    name,
                    svc,
                    &cfg,
                    doc["secrets"].as_object().expect("secrets"),
                );
                check_shards(name, &cfg, services);
            }
        }
    }
    assert_eq!(
        vitalsink_services, 5,
        "migrate, ingest, archiver, query and reshard"
    );
}

fn compose_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose")
}

/// The `key=value` pair `key` of a libpq connection string.
fn dsn_value<'a>(dsn: &'a str, key: &str) -> Option<&'a str> {
    dsn.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The hosts of a multi-host connection string, each a compose service running `image`
/// (a part of the image name), with `target_session_attrs` = `attrs`.
fn check_hosts(who: &str, dsn: &str, attrs: &str, image: &str, services: &Map<String, Value>) {
    let hosts: Vec<&str> = dsn_value(dsn, "host")
        .unwrap_or_else(|| panic!("{who}: no host in {dsn}"))
        .split(',')
        .collect();
    let ports = dsn_value(dsn, "port").unwrap_or_else(|| panic!("{who}: no port in {dsn}"));
    assert_eq!(
        ports.split(',').count(),
        hosts.len(),
        "{who}: one port per host in {dsn}"
    );
    assert!(
        hosts.len() >= 2,
        "{who}: both members of the shard in {dsn}"
    );
    assert_eq!(
        dsn_value(dsn, "target_session_attrs"),
        Some(attrs),
        "{who}: {dsn}"
    );
    for h in hosts {
        let svc = services
            .get(h)
            .unwrap_or_else(|| panic!("{who} points at unknown service {h}"));
        let img = svc["image"].as_str().unwrap_or_default();
        assert!(img.contains(image), "{who}: {h} runs {img}, not {image}");
    }
}

/// Each shard: `url` through the PgBouncers of both Patroni members (read-write),
/// `direct_urls` to the members themselves (read-write), `replicas` to the members
/// (read-only); `pooling = "transaction"`, which the archiver and reshard accept only with
/// every `direct_urls` entry.
fn check_shards(name: &str, cfg: &Config, services: &Map<String, Value>) {
    use vitalsink_common::config::{Pooling, ARCHIVER_BULK_LOCK, RESHARD_BULK_LOCK};
    assert_eq!(cfg.database.pooling, Pooling::Transaction, "{name}");
    let names: Vec<&str> = cfg.shards.iter().map(|s| s.name.as_str()).collect();
    cfg.database
        .require_sessions(names.iter().copied(), ARCHIVER_BULK_LOCK)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    cfg.database
        .require_sessions(names.iter().copied(), RESHARD_BULK_LOCK)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for s in &cfg.shards {
        let who = format!("{name}: shard {}", s.name);
        check_hosts(&who, &s.url, "read-write", "pgbouncer", services);
        let direct = cfg.database.direct_url(&s.name).unwrap();
        check_hosts(&who, direct, "read-write", "timescaledb-ha", services);
        assert!(!s.replicas.is_empty(), "{who}: no replicas for query");
        for r in &s.replicas {
            check_hosts(&who, r, "read-only", "timescaledb-ha", services);
        }
        for dsn in std::iter::once(&s.url)
            .chain(&s.replicas)
            .chain(std::iter::once(&direct.to_string()))
        {
            assert!(!dsn.contains("password"), "{who}: a password in {dsn}");
            assert!(!dsn.contains("sslmode=disable"), "{who}: no TLS in {dsn}");
        }
    }
}

/// The names of the Docker secrets `svc` mounts.
fn mounted_secrets(svc: &Value) -> Vec<String> {
    svc.get("secrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("short secret syntax").to_string())
        .collect()
}

/// `/run/secrets/NAME` must be a secret the service mounts.
fn assert_mounted(name: &str, svc: &Value, path: &Path) {
    let secret = path
        .strip_prefix("/run/secrets")
        .unwrap_or_else(|_| panic!("{name}: {} is not a Docker secret", path.display()));
    assert!(
        mounted_secrets(svc).contains(&secret.display().to_string()),
        "{name}: uses {} but does not mount that secret",
        path.display()
    );
}

fn check_secure(name: &str, svc: &Value, cfg: &Config, declared: &Map<String, Value>) {
    use vitalsink_common::pgconn::SslMode;
    assert_eq!(
        cfg.database.tls.mode,
        SslMode::VerifyFull,
        "{name}: shards verify-full"
    );
    assert_mounted(
        name,
        svc,
        cfg.database
            .tls
            .ca_file
            .as_deref()
            .expect("database.tls.ca_file"),
    );
    for role in ["migrate", "ingest", "archiver", "query", "reshard"] {
        let login = cfg
            .database
            .credentials
            .get(role)
            .unwrap_or_else(|| panic!("{name}: no database.credentials.{role}"));
        assert!(
            login.user.is_some(),
            "{name}: database.credentials.{role}.user"
        );
        assert_mounted(
            name,
            svc,
            login.password_file.as_deref().expect("password_file"),
        );
    }
    let p = &cfg.kafka.properties;
    assert_eq!(
        p.get("security.protocol").map(String::as_str),
        Some("SASL_SSL"),
        "{name}"
    );
    assert!(
        p.get("sasl.mechanisms")
            .is_some_and(|m| m.starts_with("SCRAM-SHA-")),
        "{name}"
    );
    assert!(p.get("sasl.username").is_some(), "{name}: sasl.username");
    assert!(
        !p.contains_key("sasl.password"),
        "{name}: the SASL password belongs in a file"
    );
    assert_mounted(
        name,
        svc,
        Path::new(p.get("ssl.ca.location").expect("ssl.ca.location")),
    );
    assert_mounted(
        name,
        svc,
        cfg.kafka
            .password_file
            .as_deref()
            .expect("kafka.password_file"),
    );
    assert!(
        cfg.archive.s3_endpoint.starts_with("https://"),
        "{name}: S3 over HTTPS"
    );
    assert!(!cfg.archive.s3_allow_http, "{name}: s3_allow_http");
    assert_mounted(
        name,
        svc,
        cfg.archive
            .s3_ca_file
            .as_deref()
            .expect("archive.s3_ca_file"),
    );
    for secret in mounted_secrets(svc) {
        assert!(
            declared.contains_key(&secret),
            "{name}: undeclared secret {secret}"
        );
    }
}

#[test]
fn compose_secrets_are_files_and_no_password_is_written_down() {
    let doc = compose();
    let declared = doc["secrets"].as_object().expect("top-level secrets");
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../compose/make-secrets"
    ))
    .unwrap();
    for (secret, def) in declared {
        let file = def["file"]
            .as_str()
            .unwrap_or_else(|| panic!("secret {secret}: a file"));
        let base = file
            .strip_prefix("./secrets/")
            .unwrap_or_else(|| panic!("{secret}: {file} outside compose/secrets/"));
        let stem = base.split('.').next().unwrap();
        assert!(
            script.contains(stem),
            "compose/make-secrets does not make {file}"
        );
    }
    for (name, svc) in doc["services"].as_object().unwrap() {
        for secret in mounted_secrets(svc) {
            assert!(
                declared.contains_key(&secret),
                "{name}: undeclared secret {secret}"
            );
        }
        let Some(env) = svc.get("environment").and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in env {
            let upper = k.to_uppercase();
            if upper.contains("PASS") || upper.contains("SECRET") || upper.contains("KEY") {
                assert!(
                    upper.ends_with("_FILE"),
                    "{name}: {k} is a value, not a *_FILE secret"
                );
                assert!(
                    v.as_str().unwrap().starts_with("/run/secrets/"),
                    "{name}: {k}"
                );
                let secret = v.as_str().unwrap().trim_start_matches("/run/secrets/");
                assert!(
                    mounted_secrets(svc).iter().any(|s| s == secret),
                    "{name}: {k} names an unmounted secret"
                );
            }
        }
    }
    let toml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/vitalsink.toml"),
    )
    .unwrap();
    assert!(
        !toml.contains("password="),
        "a password in compose/vitalsink.toml"
    );
}

//! `compose/docker-compose.yml` cannot run here (no Docker engine), so it is checked for
//! what would break `docker compose up`: every service has an image or a build, every
//! `depends_on` and named volume exists, and the vitalsink services' configuration (the TOML
//! file plus their `VITALSINK_*` environment) loads and validates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Map, Value};
use std::path::Path;
use vitalsink_common::Config;

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose/docker-compose.yml");
    let yaml: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
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
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "{name}: no image or build"
        );
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
            if !src.starts_with('.') && !src.starts_with('/') {
                assert!(volumes.contains_key(src), "{name}: undeclared volume {src}");
            }
        }
        if let Some(env) = svc.get("environment").and_then(Value::as_object) {
            if env.contains_key("VITALSINK_CONFIG") {
                vitalsink_services += 1;
                let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/vitalsink.toml");
                let cfg = Config::load(Some(&toml), &env_to_overrides(env))
                    .unwrap_or_else(|e| panic!("{name}: configuration does not load: {e}"));
                assert_eq!(cfg.kafka.brokers, "kafka:9092");
                for s in &cfg.shards {
                    let host = s
                        .url
                        .split_whitespace()
                        .find_map(|kv| kv.strip_prefix("host="))
                        .unwrap();
                    assert!(
                        services.contains_key(host),
                        "shard {} points at unknown service {host}",
                        s.name
                    );
                }
            }
        }
    }
    assert_eq!(vitalsink_services, 3, "migrate, ingest and archiver");
}

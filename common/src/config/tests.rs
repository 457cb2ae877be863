use super::*;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

#[derive(Serialize, Default)]
struct NoFlags {}

fn load_toml(text: &str) -> Result<Config> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    Config::load(Some(f.path()), &NoFlags {})
}

fn key_of(r: Result<Config>) -> String {
    match r {
        Err(Error::Config { key, .. }) => key,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn toml_overrides_defaults() {
    let c = load_toml(
        r#"
        [kafka]
        topic = "vitals"
        session_timeout = "6s"
        [[shards]]
        name = "a"
        url = "host=db1,db2 port=5432,5432 user=x dbname=y target_session_attrs=read-write"
        [database]
        chunk_interval = "7d"
        "#,
    )
    .unwrap();
    assert_eq!(c.kafka.topic, "vitals");
    assert_eq!(c.kafka.session_timeout, Duration::from_secs(6));
    assert_eq!(c.kafka.brokers, KafkaConfig::default().brokers);
    assert_eq!(c.shards.len(), 1);
    assert_eq!(c.database.chunk_interval, Duration::from_secs(7 * 86_400));
}

#[test]
fn unknown_key_is_named() {
    assert_eq!(key_of(load_toml("[kafka]\ntopik = \"x\"\n")), "kafka.topik");
}

#[test]
fn mistyped_key_is_named() {
    let k = key_of(load_toml("[database]\npool_size = \"many\"\n"));
    assert_eq!(k, "database.pool_size");
}

#[test]
fn bad_values_are_named() {
    assert_eq!(
        key_of(load_toml("[database]\npool_size = 0\n")),
        "database.pool_size"
    );
    assert_eq!(
        key_of(load_toml("[[shards]]\nname = \"a\"\nurl = \"host=h\"\n[[shards]]\nname = \"a\"\nurl = \"host=h\"\n")),
        "shards[1].name"
    );
    assert_eq!(
        key_of(load_toml("[kafka]\ndlq_topic = \"measurements\"\n")),
        "kafka.dlq_topic"
    );
    assert_eq!(
        key_of(load_toml("[observability]\nlisten = \"nowhere\"\n")),
        "observability.listen"
    );
    assert_eq!(
        key_of(load_toml("[[shards]]\nname = \"a\"\nurl = \"not a dsn\"\n")),
        "shards[0].url"
    );
}

#[test]
fn missing_file_is_named() {
    let r = Config::load(Some(Path::new("/nonexistent/vitalsink.toml")), &NoFlags {});
    assert_eq!(key_of(r), "config");
}

#[test]
fn flags_override_file() {
    #[derive(Serialize)]
    struct Flags {
        kafka: BTreeMap<&'static str, &'static str>,
    }
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"[kafka]\ntopic = \"from-file\"\n").unwrap();
    let flags = Flags {
        kafka: [("topic", "from-flag")].into(),
    };
    let c = Config::load(Some(f.path()), &flags).unwrap();
    assert_eq!(c.kafka.topic, "from-flag");
}

use super::*;

#[test]
fn a_dead_peer_timeout_applies_unless_the_string_sets_its_own() {
    let db = DatabaseConfig::default();
    let (pg, _) = settings("host=h dbname=d sslmode=disable", "k", &db, "t").unwrap();
    assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
    assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(5));
    assert_eq!(pg.get_keepalives_interval(), Some(Duration::from_secs(5)));
    let own = "host=h dbname=d sslmode=disable tcp_user_timeout=7";
    let (pg, _) = settings(own, "k", &db, "t").unwrap();
    assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(7)));
    assert_eq!(pg.get_keepalives_idle(), DEFAULT_KEEPALIVES_IDLE);
    let off = DatabaseConfig {
        tcp_user_timeout: Duration::ZERO,
        ..DatabaseConfig::default()
    };
    let (pg, _) = settings("host=h dbname=d sslmode=disable", "k", &off, "t").unwrap();
    assert_eq!(pg.get_tcp_user_timeout(), None);
}

#[test]
fn bad_tls_settings_name_their_key() {
    let db = DatabaseConfig::default();
    let e = settings(
        "host=h sslmode=verify-everything",
        "shards[0].url",
        &db,
        "t",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("shards[0].url") && e.contains("verify-everything"),
        "{e}"
    );
    let mut db = DatabaseConfig::default();
    db.tls.mode = SslMode::VerifyFull;
    db.tls.ca_file = Some("/nonexistent/ca.pem".into());
    let e = settings("host=h", "shards[0].url", &db, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("database.tls.ca_file"), "{e}");
    assert!(settings(
        "host=h sslmode=require user=u",
        "k",
        &DatabaseConfig::default(),
        "t"
    )
    .is_ok());
}

use super::*;

fn chain(n: i64) -> Vec<Entry> {
    let mut prev = GENESIS.to_string();
    (1..=n)
        .map(|seq| {
            let mut e = Entry {
                seq,
                at: DateTime::from_timestamp_micros(1_780_000_000_000_000 + seq).unwrap(),
                os_user: "dm".into(),
                db_role: "vs_steward".into(),
                host: "h".into(),
                action: action::WITHDRAW.into(),
                command: "trial participants withdraw p1".into(),
                reason: Some("consent withdrawn".into()),
                participants: vec!["p1".into()],
                details: "{}".into(),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            e
        })
        .collect()
}

#[test]
fn an_intact_chain_verifies() {
    assert!(verify(&chain(5), 1, GENESIS).is_empty());
}

#[test]
fn a_changed_removed_or_reordered_entry_breaks_the_chain() {
    let mut c = chain(5);
    c[2].reason = Some("other".into());
    assert_eq!(verify(&c, 1, GENESIS)[0].seq, 3);

    let mut c = chain(5);
    c.remove(1);
    assert_eq!(verify(&c, 1, GENESIS)[0].seq, 3);

    let mut c = chain(5);
    c.swap(1, 2);
    assert!(!verify(&c, 1, GENESIS).is_empty());
}

#[test]
fn null_and_empty_reasons_hash_differently() {
    let mut a = chain(1).remove(0);
    a.reason = None;
    let mut b = a.clone();
    b.reason = Some(String::new());
    assert_ne!(a.compute_hash(), b.compute_hash());
}

#[test]
fn secrets_are_masked_in_the_command_line() {
    let line = mask_args(
        [
            "trial",
            "--password",
            "hunter2",
            "--s3-secret=abc",
            "postgresql://u:pw@h/db",
            "--reason",
            "x",
        ]
        .map(String::from),
    );
    assert!(!line.contains("hunter2") && !line.contains("abc") && !line.contains(":pw@"));
    assert!(line.contains("--reason x"));
}

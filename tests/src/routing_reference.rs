//! The routing reference of `schemas/ROUTING.md`, run: the tests check where participants
//! are (or move) against it rather than against the Rust router they test.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// The shard index per participant for `shards` shards, from the Python block of ROUTING.md.
pub fn python_routes(participants: &[&String], shards: usize) -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/ROUTING.md"
    ))
    .unwrap();
    let code = doc
        .split("```python")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let script = format!(
        "{code}\nimport sys, json\nprint(json.dumps({{p: shard_for(p, {shards}) for p in sys.stdin.read().split()}}))\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: Vec<&str> = participants.iter().map(|p| p.as_str()).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

//! Issue 25, the archive's checksums checked by someone else's code: an auditor recomputes
//! every new object's `blake3-col` checksum with pyarrow and the `blake3` package from the
//! encoding the README and `archiver/src/export/checksum/columnar.rs` describe
//! (`tests/scripts/archive_checksum.py`, which shares no code with the archiver), and gets
//! the footer's `vitalsink.checksum` for each; one value changed in an object is caught.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use vitalsink_tests::archive_run::{load, parquet_objects, ArchiveSetup, Root, ROUND_TRIP};
use vitalsink_tests::Stack;

/// `archive_checksum.py` over the local archive at `root`: (exit status 0, its JSON).
fn recompute(root: &Path) -> (bool, serde_json::Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/archive_checksum.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(root)
        .output()
        .expect("python3 missing: run dev/setup");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "archive_checksum.py printed no JSON ({e}; dev/setup installs pyarrow and blake3): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auditor_recomputes_every_objects_checksum_with_pyarrow() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let setup = ArchiveSetup::new(&stack, "t_arch_cksum_py", false, "").await;
    load(&setup.dbs.shards, ROUND_TRIP).await;
    let report: serde_json::Value = serde_json::from_str(&setup.ok(&["run"])).unwrap();
    assert_eq!(report["failed"].as_i64(), Some(0), "{report}");
    let objects = parquet_objects(&setup.root).await;
    assert!(objects.len() >= 2, "{objects:?}");
    let Root::Local(root) = &setup.root else {
        panic!("a local archive")
    };

    let (ok, v) = recompute(root);
    assert!(ok, "{v}");
    assert_eq!(v["objects"].as_u64(), Some(objects.len() as u64), "{v}");
    assert_eq!(v["matched"].as_u64(), Some(objects.len() as u64), "{v}");
    assert_eq!(v["other"].as_array().map(Vec::len), Some(0), "{v}");

    // One reading's value changed in the first object, its footer's key-value metadata (and
    // so its checksum) kept.
    let victim = root.join(&objects[0]);
    let tamper = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
                  p = sys.argv[1]\n\
                  t = pq.ParquetFile(p).read()\n\
                  i = t.schema.get_field_index('value')\n\
                  v = t.column(i).to_pylist()\n\
                  v[0] += 1.0\n\
                  t = t.set_column(i, t.schema.field(i), pa.array(v, pa.float64()))\n\
                  kv = dict(pq.ParquetFile(p).metadata.metadata)\n\
                  kv.pop(b'ARROW:schema')\n\
                  pq.write_table(t.replace_schema_metadata(kv), p)\n";
    let status = Command::new("python3")
        .args(["-c", tamper])
        .arg(&victim)
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, v) = recompute(root);
    assert!(!ok, "{v}");
    assert_eq!(v["matched"].as_u64(), Some(objects.len() as u64 - 1), "{v}");
    assert_eq!(
        v["mismatched"],
        serde_json::json!([victim.to_str().unwrap()]),
        "{v}"
    );
    setup.dbs.drop_all().await;
}

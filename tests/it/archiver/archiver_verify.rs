//! Issue 4: `verify` re-checks the archive against its manifest and exits non-zero on a
//! corrupted object, a missing one and one the manifest does not know; it passes on an
//! untouched archive. Runs on S3 (the stack's SeaweedFS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use vitalsink_tests::archive_run::{load, parquet_objects, ArchiveSetup, ROUND_TRIP};
use vitalsink_tests::Stack;

fn report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_catches_corrupt_missing_and_unknown_objects() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let setup = ArchiveSetup::new(&stack, "t_arch_verify", true, "").await;
    load(&setup.dbs.shards, ROUND_TRIP).await;
    setup.ok(&["run"]);
    let objects = parquet_objects(&setup.root).await;
    assert!(objects.len() >= 10, "{objects:?}");
    let clean = setup.archiver(&["verify"], &[]);
    assert!(clean.status.success(), "{}", setup.log_tail());
    assert_eq!(report(&clean)["good"].as_u64(), Some(objects.len() as u64));

    let store = setup.root.store();
    // Corrupt: same size, one byte flipped in the middle (inside the data pages).
    let corrupt = Path::from(objects[1].as_str());
    let mut bytes = store
        .get(&corrupt)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    store.put(&corrupt, PutPayload::from(bytes)).await.unwrap();
    // Missing.
    let missing = Path::from(objects[4].as_str());
    store.delete(&missing).await.unwrap();
    // Unknown: a copy under a name no manifest entry has (readers would double count it).
    let unknown = Path::from(objects[6].replace(".parquet", "-copy.parquet").as_str());
    store
        .copy(&Path::from(objects[6].as_str()), &unknown)
        .await
        .unwrap();

    let out = setup.archiver(&["verify"], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must fail: {}",
        setup.log_tail()
    );
    let r = report(&out);
    assert_eq!(
        r["corrupt"],
        serde_json::json!([corrupt.to_string()]),
        "{r}"
    );
    assert_eq!(
        r["missing"],
        serde_json::json!([missing.to_string()]),
        "{r}"
    );
    assert_eq!(
        r["unknown"],
        serde_json::json!([unknown.to_string()]),
        "{r}"
    );
    assert_eq!(r["good"].as_u64(), Some(objects.len() as u64 - 2), "{r}");

    // --quick checks existence and size only: it still catches the missing object.
    let quick = setup.archiver(&["verify", "--quick"], &[]);
    assert_eq!(quick.status.code(), Some(1));
    assert_eq!(
        report(&quick)["missing"],
        serde_json::json!([missing.to_string()])
    );
    setup.dbs.drop_all().await;
}

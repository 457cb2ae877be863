//! The real object stores: SeaweedFS's S3 gateway (`dev/stack up`) and a local directory
//! (the NAS case). The same suite runs on both, as object_store's own integration suite does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use vitalsink_tests::{unique, Stack};

async fn put_list_get(store: &dyn ObjectStore, what: &str) {
    let prefix = Path::from(unique("stack-os"));
    let mut names = Vec::new();
    for i in 0..3 {
        let p = prefix
            .clone()
            .join(format!("date=2026-01-0{}", i + 1))
            .join("part.bin");
        let body: Vec<u8> = (0..100_000u32).map(|x| (x * 7 + i) as u8).collect();
        store
            .put(&p, PutPayload::from(body))
            .await
            .unwrap_or_else(|e| panic!("{what}: put: {e}"));
        names.push(p);
    }
    let mut listed: Vec<Path> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(listed, names, "{what}: list");
    for (i, p) in names.iter().enumerate() {
        let got = store.get(p).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.len(), 100_000, "{what}: size");
        assert!(
            got.iter()
                .enumerate()
                .all(|(x, &b)| b == (x as u32 * 7 + i as u32) as u8),
            "{what}: content"
        );
    }
    store.delete(&names[0]).await.unwrap();
    assert!(
        store.head(&names[0]).await.is_err(),
        "{what}: deleted object is gone"
    );
}

#[tokio::test]
async fn s3_put_list_get() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let stack = Stack::from_env();
    let s3 = AmazonS3Builder::new()
        .with_endpoint(&stack.s3_endpoint)
        .with_allow_http(true)
        .with_bucket_name(&stack.s3_bucket)
        .with_region("us-east-1")
        .with_access_key_id("vitalsink")
        .with_secret_access_key("vitalsink")
        .build()
        .unwrap();
    put_list_get(&s3, "s3").await;
}

#[tokio::test]
async fn local_directory_put_list_get() {
    let _stack = vitalsink_tests::stack_lock::shared().await;
    let dir = std::env::temp_dir().join(unique("vitalsink-nas"));
    std::fs::create_dir_all(&dir).unwrap();
    let fs = LocalFileSystem::new_with_prefix(&dir).unwrap();
    put_list_get(&fs, "local").await;
    std::fs::remove_dir_all(&dir).unwrap();
}

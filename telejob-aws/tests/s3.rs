//! S3Store against a local AWS endpoint (moto): the core conformance suite and S3 specifics.

use std::time::Duration;

use bytes::Bytes;
use telejob_aws::testing::Moto;
use telejob_aws::{S3Store, S3StoreBuilder};
use telejob_core::store::{PutOptions, Store};
use telejob_core::testing::FailingReader;

async fn store(moto: &Moto, url: &str) -> S3Store {
    S3StoreBuilder::from_url(url)
        .expect("url")
        .with_aws(moto.aws())
        .with_part_size(5 << 20)
        .build()
        .await
        .expect("store")
}

#[tokio::test]
async fn s3_store_conforms() {
    let Some(moto) = Moto::start() else { return };
    moto.create_buckets(&["conf-root", "conf-prefixed"]);
    let checks = telejob_core::testing::STORE_CHECKS;
    let ran =
        telejob_core::testing::store_conformance(&*store(&moto, "s3://conf-root").await).await;
    assert_eq!(ran, checks);
    // Under a key prefix, keys are relative to it and nothing leaks outside.
    let s = store(&moto, "s3://conf-prefixed/deep/er/").await;
    assert_eq!(telejob_core::testing::store_conformance(&*s).await, checks);
    let outside = store(&moto, "s3://conf-prefixed").await;
    s.put("x/y", Bytes::from_static(b"1"), PutOptions::default())
        .await
        .expect("put");
    let all = outside.list("").await.expect("list");
    assert!(all.iter().all(|m| m.key.starts_with("deep/er/")), "{all:?}");
    assert_eq!(s.locate("x/y"), "s3://conf-prefixed/deep/er/x/y");
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_come_back_whole() {
    let Some(moto) = Moto::start() else { return };
    moto.create_buckets(&["big"]);
    let s = store(&moto, "s3://big/p").await;
    // 12 MiB + a bit, parts of 5 MiB: three parts.
    let data: Vec<u8> = (0..(12 << 20) + 123)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let n = s
        .put_stream(
            "big.bin",
            Box::new(std::io::Cursor::new(data.clone())),
            PutOptions::default(),
        )
        .await
        .expect("put_stream");
    assert_eq!(n, data.len() as u64);
    assert_eq!(s.get("big.bin").await.expect("get"), data);
    // S3 reports multipart objects with an ETag that ends in -<parts>.
    let etag = moto.boto3("print(s3.head_object(Bucket='big', Key='p/big.bin')['ETag'])");
    assert!(etag.trim().trim_matches('"').ends_with("-3"), "{etag}");
}

#[tokio::test]
async fn a_failed_multipart_upload_is_aborted_and_leaves_nothing() {
    let Some(moto) = Moto::start() else { return };
    moto.create_buckets(&["aborts"]);
    let s = store(&moto, "s3://aborts").await;
    let err = s
        .put_stream(
            "half.bin",
            Box::new(FailingReader::new(vec![7u8; 11 << 20], "disk on fire")),
            PutOptions::default(),
        )
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(s.head("half.bin").await.expect("head").is_none());
    let uploads =
        moto.boto3("print(len(s3.list_multipart_uploads(Bucket='aborts').get('Uploads', [])))");
    assert_eq!(uploads.trim(), "0", "the multipart upload was not aborted");
}

#[tokio::test]
async fn presigned_urls_read_without_credentials() {
    let Some(moto) = Moto::start() else { return };
    moto.create_buckets(&["signed"]);
    let s = store(&moto, "s3://signed/pre").await;
    s.put(
        "k/obj.txt",
        Bytes::from_static(b"hello"),
        PutOptions::default(),
    )
    .await
    .expect("put");
    let url = s
        .presign_get("k/obj.txt", Duration::from_secs(600))
        .await
        .expect("presign");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains("/signed/pre/k/obj.txt"), "{url}");
    let out = telejob_core::testing::output_of(
        std::process::Command::new("curl").args(["-fsS", &url]),
        "curl of the pre-signed URL",
    );
    assert_eq!(out.stdout, b"hello");
}

#[tokio::test]
async fn errors_name_the_object_and_missing_buckets_are_clear() {
    let Some(moto) = Moto::start() else { return };
    let s = store(&moto, "s3://no-such-bucket").await;
    let e = s
        .put("a", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .expect_err("no bucket");
    let msg = e.to_string();
    assert!(
        msg.contains("put \"a\"") && msg.contains("the bucket does not exist"),
        "{msg}"
    );
    assert!(!msg.contains("  "), "one line, no runs of spaces: {msg:?}");
}

#[tokio::test]
async fn objects_carry_the_content_type_they_were_written_with() {
    let Some(moto) = Moto::start() else { return };
    moto.create_buckets(&["typed"]);
    let s = store(&moto, "s3://typed/p/").await;
    let ct = telejob_core::agent::publish::content_type_for("day.csv.gz");
    s.put(
        "day.csv.gz",
        Bytes::from_static(b"x"),
        PutOptions::default().with_content_type(&ct),
    )
    .await
    .expect("put");
    s.put_stream(
        "summary.json",
        Box::new(std::io::Cursor::new(b"{}".to_vec())),
        PutOptions::default().with_content_type("application/json"),
    )
    .await
    .expect("put_stream");
    let types = moto.boto3(
        "print(s3.head_object(Bucket='typed', Key='p/day.csv.gz')['ContentType'], s3.head_object(Bucket='typed', Key='p/summary.json')['ContentType'])",
    );
    assert_eq!(types.trim(), "application/gzip application/json");
}

//! The [`Store`] checks.

use bytes::Bytes;

use crate::run::RunId;
use crate::store::{PutOptions, Store, StoreExt};

/// The store checks, by name, in the order [`store_conformance`] runs them.
pub const STORE_CHECKS: &[&str] = &[
    "put_get_head",
    "not_found",
    "streaming_put",
    "atomic_put",
    "list_prefixes",
    "json",
    "invalid_keys",
    "delete",
];

/// Runs every store check that `store`'s [`StoreCapabilities`](crate::store::StoreCapabilities)
/// select, each under its own key prefix; returns the names of the checks run.
pub async fn store_conformance(store: &dyn Store) -> Vec<&'static str> {
    let caps = store.capabilities();
    let mut ran = Vec::new();
    let base = || format!("conformance-{}", RunId::new());
    store_put_get_head(store, &base()).await;
    ran.push("put_get_head");
    store_not_found(store, &base()).await;
    ran.push("not_found");
    if caps.streaming_put {
        store_streaming_put(store, &base()).await;
        ran.push("streaming_put");
    }
    if caps.atomic_put {
        store_atomic_put(store, &base()).await;
        ran.push("atomic_put");
    }
    store_list_prefixes(store, &base()).await;
    ran.push("list_prefixes");
    store_json(store, &base()).await;
    ran.push("json");
    store_invalid_keys(store).await;
    ran.push("invalid_keys");
    store_delete(store, &base()).await;
    ran.push("delete");
    ran
}

/// `put` then `get` and `head` return what was written; a second `put` replaces it.
pub async fn store_put_get_head(store: &dyn Store, base: &str) {
    let key = format!("{base}/a/one.txt");
    let put =
        |body: &'static [u8]| store.put(&key, Bytes::from_static(body), PutOptions::default());
    put(b"one").await.expect("put");
    assert_eq!(
        store.get(&key).await.expect("get").as_ref(),
        b"one",
        "put_get_head: get returns what put wrote"
    );
    let meta = store
        .head(&key)
        .await
        .expect("head")
        .expect("put_get_head: head finds the object");
    assert_eq!(meta.size, 3, "put_get_head: head reports the size");
    assert_eq!(meta.key, key, "put_get_head: head reports the key");
    put(b"uno!").await.expect("overwrite");
    assert_eq!(
        store.get(&key).await.expect("get").as_ref(),
        b"uno!",
        "put_get_head: put replaces"
    );
    store.delete(&key).await.expect("delete");
}

/// A missing key: `get` is `NotFound`, `head` is `None`, `delete` succeeds.
pub async fn store_not_found(store: &dyn Store, base: &str) {
    let key = format!("{base}/missing");
    assert!(
        matches!(store.get(&key).await, Err(crate::Error::NotFound(_))),
        "not_found: get of a missing key is NotFound"
    );
    assert!(
        store.get_stream(&key).await.is_err(),
        "not_found: get_stream of a missing key fails"
    );
    assert_eq!(
        store.head(&key).await.expect("head of missing"),
        None,
        "not_found: head of a missing key is None"
    );
    store
        .delete(&key)
        .await
        .expect("not_found: delete of a missing key succeeds");
}

/// `put_stream` of an empty and of a multi-megabyte object (several parts where the store
/// uploads in parts); `get` and `get_stream` return them whole.
pub async fn store_streaming_put(store: &dyn Store, base: &str) {
    let (big_key, empty_key) = (format!("{base}/big.bin"), format!("{base}/empty"));
    let big: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let n = store
        .put_stream(
            &big_key,
            Box::new(std::io::Cursor::new(big.clone())),
            PutOptions::default(),
        )
        .await
        .expect("put_stream");
    assert_eq!(
        n,
        big.len() as u64,
        "streaming_put: put_stream returns the size"
    );
    assert!(
        store.get(&big_key).await.expect("get big").as_ref() == &big[..],
        "streaming_put: streamed content intact"
    );
    let mut r = store.get_stream(&big_key).await.expect("get_stream");
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
        .await
        .expect("read stream");
    assert!(back == big, "streaming_put: get_stream content intact");
    store
        .put_stream(
            &empty_key,
            Box::new(std::io::Cursor::new(Vec::new())),
            PutOptions::default(),
        )
        .await
        .expect("empty put_stream");
    assert_eq!(
        store.head(&empty_key).await.expect("head").map(|m| m.size),
        Some(0),
        "streaming_put: empty objects exist"
    );
    for k in [big_key, empty_key] {
        store.delete(&k).await.expect("delete");
    }
}

/// A reader that yields `good` bytes, then fails with `why` (a broken upload, a disk on fire).
#[derive(Debug)]
pub struct FailingReader {
    good: std::io::Cursor<Vec<u8>>,
    why: &'static str,
}

impl FailingReader {
    /// A reader of `good`, then the error `why`.
    pub fn new(good: Vec<u8>, why: &'static str) -> Self {
        Self {
            good: std::io::Cursor::new(good),
            why,
        }
    }
}

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.good.position() < self.good.get_ref().len() as u64 {
            return std::pin::Pin::new(&mut self.good).poll_read(cx, buf);
        }
        std::task::Poll::Ready(Err(std::io::Error::other(self.why)))
    }
}

/// A `put_stream` whose reader fails leaves the key as it was: the old object, or none.
pub async fn store_atomic_put(store: &dyn Store, base: &str) {
    let (old_key, new_key) = (format!("{base}/kept"), format!("{base}/never"));
    store
        .put(&old_key, Bytes::from_static(b"old"), PutOptions::default())
        .await
        .expect("put");
    for (key, size) in [(&old_key, 100usize), (&new_key, 100), (&new_key, 9 << 20)] {
        let reader = FailingReader::new(vec![7u8; size], "the upload broke off");
        assert!(
            store
                .put_stream(key, Box::new(reader), PutOptions::default())
                .await
                .is_err(),
            "atomic_put: a failing reader fails the put"
        );
    }
    assert_eq!(
        store.get(&old_key).await.expect("get").as_ref(),
        b"old",
        "atomic_put: a failed put leaves the old object"
    );
    assert_eq!(
        store.head(&new_key).await.expect("head"),
        None,
        "atomic_put: a failed put leaves no object"
    );
    store.delete(&old_key).await.expect("delete");
}

/// `list(prefix)` returns exactly the objects under the prefix (not `ab/` for `a/`), sorted.
pub async fn store_list_prefixes(store: &dyn Store, base: &str) {
    let k = |s: &str| format!("{base}/{s}");
    for key in ["a/two.txt", "a/one.txt", "a/deeper/x", "ab/x", "b"] {
        store
            .put(&k(key), Bytes::from_static(b"x"), PutOptions::default())
            .await
            .expect("put");
    }
    let listed = |p: String| async move {
        store
            .list(&p)
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(k("a/")).await,
        vec![k("a/deeper/x"), k("a/one.txt"), k("a/two.txt")],
        "list_prefixes: the prefix's objects, sorted"
    );
    assert_eq!(
        listed(k("a")).await,
        vec![k("a/deeper/x"), k("a/one.txt"), k("a/two.txt"), k("ab/x")],
        "list_prefixes: a prefix need not end at a /"
    );
    assert!(
        listed(k("nothing/")).await.is_empty(),
        "list_prefixes: an empty prefix lists nothing"
    );
    for key in ["a/two.txt", "a/one.txt", "a/deeper/x", "ab/x", "b"] {
        store.delete(&k(key)).await.expect("delete");
    }
}

/// The JSON conveniences round-trip.
pub async fn store_json(store: &dyn Store, base: &str) {
    let key = format!("{base}/j.json");
    store
        .put_json(&key, &serde_json::json!({"x": 1}))
        .await
        .expect("put_json");
    let v: serde_json::Value = store.get_json(&key).await.expect("get_json");
    assert_eq!(v["x"], 1, "json: round trip");
    store.delete(&key).await.expect("delete");
}

/// Invalid keys are refused by every operation, never rewritten.
pub async fn store_invalid_keys(store: &dyn Store) {
    for bad in ["", "/abs", "a/../b", "a//b", "ctl\u{1}x", "back\\slash"] {
        assert!(
            store
                .put(bad, Bytes::from_static(b"x"), PutOptions::default())
                .await
                .is_err(),
            "invalid_keys: put of {bad:?} must be refused"
        );
        assert!(
            store.get(bad).await.is_err() && store.head(bad).await.is_err(),
            "invalid_keys: reads of {bad:?} must be refused"
        );
    }
}

/// `delete` removes the object and nothing else.
pub async fn store_delete(store: &dyn Store, base: &str) {
    let (gone, kept) = (format!("{base}/gone"), format!("{base}/gone2"));
    for k in [&gone, &kept] {
        store
            .put(k, Bytes::from_static(b"x"), PutOptions::default())
            .await
            .expect("put");
    }
    store.delete(&gone).await.expect("delete");
    assert_eq!(
        store.head(&gone).await.expect("head"),
        None,
        "delete: removed"
    );
    assert!(
        store.head(&kept).await.expect("head").is_some(),
        "delete: a key sharing the prefix stays"
    );
    store.delete(&kept).await.expect("delete");
    assert!(
        store.list(base).await.expect("list").is_empty(),
        "delete: nothing left"
    );
}

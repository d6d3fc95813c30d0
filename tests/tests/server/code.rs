//! Code uploads: checked with the runs' unpacker, capped, unsafe entries named.

use super::*;

#[tokio::test]
async fn code_uploads_are_checked_and_capped() {
    let (_dir, srv) = configured("max_code_bytes = 4096\n");
    let api = Api::new(&srv, Some(&srv.token));
    api.create(json!({"name": "up"})).await;
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/up/code",
            Some(b"<html>not a tarball</html>".to_vec()),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("code")), "{v}");
    let big: String = (0..20_000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let (s, _, _) = api
        .call("PUT", "/api/jobs/up/code", Some(big.into_bytes()))
        .await;
    assert_eq!(s, 413);
    let (s, v) = api
        .put_code("up", tarball(&[("run.sh", "true", 0o755)]))
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, job) = api.get("/api/jobs/up").await;
    assert_eq!(job["code_versions"].as_array().map(Vec::len), Some(1));
    assert_eq!(job["code_sha256"], v["sha256"]);
    // A job without code cannot run.
    assert_eq!(
        api.post_json("/api/jobs", &json!({"name": "nocode"}))
            .await
            .0,
        201
    );
    assert_eq!(
        api.post_json("/api/jobs/nocode/runs", &json!({})).await.0,
        422
    );
}

/// A gzip tarball with `run.sh` and a file entry named `name` as is (tar's own builder refuses
/// `..`, as it should).
fn traversal_tarball(name: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o755);
    b.append_data(&mut h, "run.sh", &b"true"[..])
        .expect("run.sh");
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &b"x"[..]).expect("entry");
    b.into_inner().expect("tar").finish().expect("gzip")
}

#[tokio::test]
async fn an_unsafe_upload_is_refused_naming_the_entry() {
    let (_dir, _srv, api) = fresh();
    api.create(json!({"name": "evil"})).await;
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/evil/code",
            Some(traversal_tarball("a/../../escape")),
        )
        .await;
    assert_refused((s, &v), 422, Some("code"), "a/../../escape");
    let (_, job) = api.get("/api/jobs/evil").await;
    assert_eq!(job["code_versions"], json!([]), "nothing was stored");
}

//! Bad input, generated: bodies (random bytes, and job, backfill and token bodies with fields of
//! the wrong shape, keys given twice, cut short), query strings and path segments, sent to the
//! whole router in process. Whatever arrives, no answer is a 5xx, every 400 and 422 names its
//! field, and no answer shows a server path.

use axum::http::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use super::contract_tests::App;

/// Any JSON value, a few levels deep, with the awkward ones common: huge and negative numbers,
/// sizes past 16 EiB, empty and odd strings.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!("99999999999999999999GiB")),
        Just(json!("16EiB")),
        Just(json!("")),
        Just(json!("../../etc/passwd")),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The fields the API's bodies have.
const FIELDS: &[&str] = &[
    "name",
    "command",
    "output_dir",
    "schedule",
    "timeout_minutes",
    "env",
    "secrets",
    "limits",
    "notify",
    "maintainers",
    "output_visibility",
    "image",
    "instance_type",
    "backfill_concurrency",
    "start_at",
    "end_at",
    "from",
    "to",
    "dry_run",
    "user",
    "admin",
];

/// A body: random bytes, or an object of known fields with any values, perhaps with a key given
/// twice or cut short.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    let object = (
        prop::collection::vec((prop::sample::select(FIELDS), any_json()), 0..6),
        any::<bool>(),
        any::<Option<prop::sample::Index>>(),
    )
        .prop_map(|(fields, twice, cut)| {
            let mut parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{:?}: {v}", k))
                .collect();
            if twice && let Some(first) = parts.first().cloned() {
                parts.push(first);
            }
            let mut text = format!("{{{}}}", parts.join(", ")).into_bytes();
            if let Some(i) = cut {
                text.truncate(i.index(text.len() + 1));
            }
            text
        });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..64), object]
}

/// A code upload: random bytes, or a gzipped tarball with bytes changed.
fn any_code() -> impl Strategy<Value = Vec<u8>> {
    let tarball = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "run.sh", &b"ls\n"[..])
            .expect("append");
        let tar = b.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gz");
        gz.finish().expect("gz")
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8).prop_map(
            move |edits| {
                let mut t = tarball.clone();
                for (at, b) in edits {
                    let i = at.index(t.len());
                    t[i] = b;
                }
                t
            }
        ),
    ]
}

/// Where bodies and queries go.
fn any_request() -> impl Strategy<Value = (&'static str, String, Vec<u8>)> {
    let segment = prop::collection::vec(any::<u8>(), 1..12)
        .prop_map(|b| b.iter().map(|c| format!("%{c:02X}")).collect::<String>());
    let query = "[a-z=&%0-9A-F]{0,24}";
    prop_oneof![
        any_body().prop_map(|b| ("POST", "/api/jobs".to_string(), b)),
        any_body().prop_map(|b| ("PUT", "/api/jobs/fuzzed".to_string(), b)),
        any_body().prop_map(|b| ("POST", "/api/jobs/fuzzed/backfill".to_string(), b)),
        any_body().prop_map(|b| ("POST", "/api/tokens".to_string(), b)),
        any_code().prop_map(|b| ("PUT", "/api/jobs/fuzzed/code".to_string(), b)),
        query.prop_map(|q| ("GET", format!("/api/jobs/fuzzed/runs?{q}"), Vec::new())),
        query.prop_map(|q| ("GET", format!("/api/jobs/fuzzed/schedule?{q}"), Vec::new())),
        segment
            .clone()
            .prop_map(|s| ("GET", format!("/api/jobs/{s}"), Vec::new())),
        segment.prop_map(|s| ("GET", format!("/api/runs/{s}"), Vec::new())),
    ]
}

#[test]
fn no_bad_input_answers_5xx_or_leaves_its_field_unnamed() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let app = rt.block_on(async {
        let app = App::new().await;
        let job = serde_json::to_vec(&json!({"name": "fuzzed"})).expect("json");
        assert_eq!(app.admin_raw("POST", "/api/jobs", job).await.0, 201);
        app
    });
    let data_dir = app.data_dir().display().to_string();
    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    runner
        .run(&any_request(), |(method, path, body)| {
            let (status, answer) = rt.block_on(app.admin_raw(method, &path, body.clone()));
            let text = String::from_utf8_lossy(&answer);
            let shown = || {
                format!(
                    "{method} {path} {:?} -> {status} {text}",
                    String::from_utf8_lossy(&body)
                )
            };
            prop_assert!(!status.is_server_error(), "{}", shown());
            prop_assert!(!text.contains(&data_dir), "a server path: {}", shown());
            prop_assert!(!text.contains("/tmp/"), "a server path: {}", shown());
            if status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY {
                let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                prop_assert!(v["field"].is_string(), "no field named: {}", shown());
                prop_assert!(v["error"].is_string(), "{}", shown());
            }
            Ok(())
        })
        .expect("every bad input is answered well");
}

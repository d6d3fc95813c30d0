use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::*;

fn code_with(out: impl FnOnce(&Path)) -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let o = t.path().join("output");
    fs::create_dir(&o).expect("mkdir");
    out(&o);
    t
}

#[test]
fn plans_regular_files_and_reports_the_rest() {
    let t = code_with(|o| {
        fs::write(o.join("a.csv"), "1").expect("w");
        fs::create_dir(o.join("sub")).expect("mkdir");
        fs::write(o.join("sub/b.csv"), "22").expect("w");
        fs::write(o.join(OsStr::from_bytes(b"bad\xffname")), "x").expect("w");
        fs::write(o.join("ctl\u{7}name"), "x").expect("w");
        std::os::unix::fs::symlink("/etc/passwd", o.join("pw")).expect("ln");
        std::os::unix::fs::symlink("sub/b.csv", o.join("b-latest.csv")).expect("ln");
        std::os::unix::fs::symlink("missing", o.join("dangling")).expect("ln");
    });
    let p = plan(t.path(), "output", "j/data/", &PublishPolicy::default()).expect("plan");
    let files: Vec<(&str, u64)> = p.files.iter().map(|f| (f.rel.as_str(), f.size)).collect();
    assert_eq!(
        files,
        vec![("a.csv", 1), ("b-latest.csv", 2), ("sub/b.csv", 2)]
    );
    let skipped: Vec<&str> = p.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert!(
        skipped.contains(&"pw")
            && skipped.contains(&"dangling")
            && skipped.contains(&"ctl\u{7}name")
    );
}

#[test]
fn limits_fail_the_publish() {
    let t = code_with(|o| {
        for i in 0..5 {
            fs::write(o.join(format!("f{i}")), "0123456789").expect("w");
        }
    });
    let few = PublishPolicy {
        max_files: 4,
        ..PublishPolicy::default()
    };
    assert!(
        matches!(plan(t.path(), "output", "j/data/", &few), Err(Error::Publish { reason: m, .. }) if m.contains("max_files"))
    );
    let small = PublishPolicy {
        max_total_bytes: 49,
        ..PublishPolicy::default()
    };
    assert!(
        matches!(plan(t.path(), "output", "j/data/", &small), Err(Error::Publish { reason: m, .. }) if m.contains("max_total_bytes"))
    );
}

#[test]
fn deny_globs_are_configurable() {
    let t = code_with(|o| {
        fs::write(o.join("keep.csv"), "1").expect("w");
        fs::write(o.join("raw.parquet"), "1").expect("w");
    });
    let policy = PublishPolicy {
        deny: vec!["**/*.parquet".into()],
        ..PublishPolicy::default()
    };
    let p = plan(t.path(), "output", "j/data/", &policy).expect("plan");
    assert_eq!(p.files.len(), 1);
    assert_eq!(p.skipped[0].path, "raw.parquet");
    let bad = PublishPolicy {
        deny: vec!["[".into()],
        ..PublishPolicy::default()
    };
    assert!(plan(t.path(), "output", "j/data/", &bad).is_err());
}

#[test]
fn the_output_directory_is_checked_just_before_publishing() {
    let t = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        plan(t.path(), "output", "j/", &PublishPolicy::default()),
        Err(Error::OutputDir { .. })
    ));
    fs::write(t.path().join("output"), "file").expect("w");
    assert!(matches!(
        plan(t.path(), "output", "j/", &PublishPolicy::default()),
        Err(Error::OutputDir { .. })
    ));
    fs::remove_file(t.path().join("output")).expect("rm");
    std::os::unix::fs::symlink("/tmp", t.path().join("output")).expect("ln");
    let e = plan(t.path(), "output", "j/", &PublishPolicy::default()).expect_err("outside");
    assert!(e.to_string().contains("outside the code"), "{e}");
    // A link that stays inside the code is fine.
    fs::remove_file(t.path().join("output")).expect("rm");
    fs::create_dir(t.path().join("real")).expect("mkdir");
    fs::write(t.path().join("real/x"), "x").expect("w");
    std::os::unix::fs::symlink("real", t.path().join("output")).expect("ln");
    assert_eq!(
        plan(t.path(), "output", "j/", &PublishPolicy::default())
            .expect("plan")
            .files
            .len(),
        1
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_read_fails_the_upload() {
    let t = code_with(|o| {
        fs::write(o.join("a.csv"), "1").expect("w");
        fs::write(o.join("b.csv"), "2").expect("w");
    });
    let p = plan(t.path(), "output", "j/data/", &PublishPolicy::default()).expect("plan");
    // The file vanishes (or becomes unreadable) between planning and upload.
    fs::remove_file(t.path().join("output/b.csv")).expect("rm");
    let store = crate::store::MemoryStore::new();
    let err = upload(&p, &store, "j/data/", 2, None, None)
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, Error::Publish { reason: ref m, .. } if m.contains("b.csv")),
        "{err}"
    );
}

/// A fence that lets `open` batches through, then refuses.
#[derive(Debug)]
struct ClosesAfter {
    open: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl crate::store::PublishFence for ClosesAfter {
    async fn check(&self, _: &crate::job::JobName, _: &crate::run::RunId) -> Result<()> {
        let left = self.open.load(std::sync::atomic::Ordering::SeqCst);
        if left == 0 {
            return Err(Error::publish("the job is being deleted"));
        }
        self.open
            .store(left - 1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_closed_fence_stops_the_upload_before_the_next_batch() {
    let t = code_with(|o| {
        for i in 0..(FENCE_BATCH * 3) {
            fs::write(o.join(format!("{i}.csv")), "1").expect("w");
        }
    });
    let p = plan(t.path(), "output", "j/data/", &PublishPolicy::default()).expect("plan");
    let store = crate::store::MemoryStore::new();
    let fence = ClosesAfter {
        open: std::sync::atomic::AtomicUsize::new(1),
    };
    let (job, run) = (
        crate::job::JobName::new("j".to_string()).expect("name"),
        crate::run::RunId::new(),
    );
    let f = Fence {
        fence: &fence,
        job: &job,
        run: &run,
    };
    let err = upload(&p, &store, "j/data/", 8, None, Some(f))
        .await
        .expect_err("the fence closed");
    assert!(err.to_string().contains("being deleted"), "{err}");
    let written = store.list("j/data/").await.expect("list").len();
    assert_eq!(written, FENCE_BATCH, "one batch, then nothing");
}

#[test]
fn published_files_get_a_content_type_from_their_name() {
    for (name, want) in [
        ("slowsql20140308.csv.gz", "application/gzip"),
        ("summary.json", "application/json"),
        ("report.html", "text/html"),
        ("table.csv", "text/csv"),
        ("no-extension", "application/octet-stream"),
    ] {
        assert_eq!(content_type_for(name), want, "{name}");
    }
}

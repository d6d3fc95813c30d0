//! Unpacking code archives (tar.gz, tar.zst, tar.xz) and publishing an output directory to the
//! local store. Fixed inputs made here: 256 files of 64 KiB of compressible text (16 MiB).
//! The side-by-side comparisons with GNU tar and S3 clients are in `benches/peers/`.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use telejob_core::agent::publish::{PublishPolicy, plan, upload};
use telejob_core::agent::unpack::{UnpackLimits, unpack};
use telejob_local::LocalStore;

const FILES: usize = 256;
const FILE_BYTES: usize = 64 << 10;

/// Compressible but not trivial: numbered CSV-like lines.
fn body(i: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(FILE_BYTES);
    let mut n = i * 7919;
    while v.len() < FILE_BYTES {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let _ = writeln!(v, "{},{},{:x}", i, n % 100_000, n >> 40);
    }
    v.truncate(FILE_BYTES);
    v
}

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..FILES {
        let data = body(i);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_400_000_000);
        b.append_data(&mut h, format!("data/f{i:04}.csv"), data.as_slice())
            .expect("append");
    }
    b.into_inner().expect("tar")
}

fn compressed() -> Vec<(&'static str, Vec<u8>)> {
    let tar = tar_bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let zst = zstd::encode_all(tar.as_slice(), 3).expect("zstd");
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).expect("xz");
    vec![
        ("tar.gz", gz.finish().expect("gzip")),
        ("tar.zst", zst),
        ("tar.xz", xz.finish().expect("xz")),
    ]
}

fn bench_unpack(c: &mut Criterion) {
    let mut g = c.benchmark_group("unpack");
    g.throughput(Throughput::Bytes((FILES * FILE_BYTES) as u64));
    g.sample_size(10);
    let scratch = tempfile::tempdir().expect("tmp");
    for (name, bytes) in compressed() {
        g.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir_in(scratch.path()).expect("dest"),
                |dest| {
                    let s = unpack(bytes.as_slice(), dest.path(), &UnpackLimits::default())
                        .expect("unpack");
                    black_box(s);
                    dest
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

fn bench_publish(c: &mut Criterion) {
    let src = tempfile::tempdir().expect("tmp");
    let out = src.path().join("output");
    std::fs::create_dir_all(&out).expect("output");
    for i in 0..FILES {
        std::fs::write(out.join(format!("f{i:04}.csv")), body(i)).expect("write");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dest = tempfile::tempdir().expect("tmp");
    let store = Arc::new(LocalStore::new(dest.path()).expect("store"));
    let policy = PublishPolicy::default();
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Bytes((FILES * FILE_BYTES) as u64));
    g.sample_size(10);
    g.bench_function("local_store_256x64KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let p = plan(src.path(), "output", "job/data/", &policy).expect("plan");
                let files = upload(
                    &p,
                    store.as_ref(),
                    "job/data/",
                    policy.concurrency,
                    None,
                    None,
                )
                .await
                .expect("upload");
                black_box(files)
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bench_unpack, bench_publish);
criterion_main!(benches);

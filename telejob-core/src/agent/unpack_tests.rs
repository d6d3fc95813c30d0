//! Hostile archives, built entry by entry with the tar crate's header API.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use proptest::prelude::*;
use tar::{EntryType, Header};

use super::*;

/// One archive entry. Paths and link targets are written raw into the header, so `..` and
/// absolute paths reach the unpacker as an attacker would send them.
#[derive(Debug, Clone)]
enum E {
    File(&'static str, &'static [u8]),
    FileMode(&'static str, u32),
    Dir(&'static str),
    Sym(&'static str, &'static str),
    Hard(&'static str, &'static str),
    Kind(&'static str, EntryType),
}

fn header(path: &[u8], kind: EntryType, link: &[u8], size: u64, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    h.as_mut_bytes()[..path.len()].copy_from_slice(path);
    h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_400_000_000);
    h.set_cksum();
    h
}

fn archive(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (Header, &[u8]) = match e {
            E::File(p, d) => (
                header(p.as_bytes(), EntryType::Regular, b"", d.len() as u64, 0o644),
                d,
            ),
            E::FileMode(p, m) => (header(p.as_bytes(), EntryType::Regular, b"", 1, *m), b"x"),
            E::Dir(p) => (
                header(p.as_bytes(), EntryType::Directory, b"", 0, 0o755),
                b"",
            ),
            E::Sym(p, t) => (
                header(p.as_bytes(), EntryType::Symlink, t.as_bytes(), 0, 0o777),
                b"",
            ),
            E::Hard(p, t) => (
                header(p.as_bytes(), EntryType::Link, t.as_bytes(), 0, 0o644),
                b"",
            ),
            E::Kind(p, k) => (header(p.as_bytes(), *k, b"", 0, 0o644), b""),
        };
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish")
}

/// A sandbox: `dest/` to unpack into, `outside/` next to it holding a file that must survive.
struct Sandbox {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("ws/code");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&dest).expect("dest");
        fs::create_dir_all(&outside).expect("outside");
        fs::write(outside.join("secret"), b"secret").expect("secret");
        fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).expect("chmod");
        Self {
            _tmp: tmp,
            dest,
            outside,
        }
    }

    /// Everything under the temp root but `dest`: paths, modes, contents.
    fn outside_snapshot(&self) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        let top = self.outside.parent().expect("parent");
        walkdir::WalkDir::new(top)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| !e.path().starts_with(&self.dest))
            .filter_map(|e| e.ok())
            .map(|e| {
                let m = fs::symlink_metadata(e.path()).expect("meta");
                let data = if m.is_file() {
                    fs::read(e.path()).expect("read")
                } else {
                    Vec::new()
                };
                (e.path().to_path_buf(), (m.mode(), data))
            })
            .collect()
    }

    /// The permission bits (setuid, setgid and sticky included) of `rel` in `dest`.
    fn mode(&self, rel: &str) -> u32 {
        fs::metadata(self.dest.join(rel)).expect("meta").mode() & 0o7777
    }

    fn unpack(&self, entries: &[E]) -> Result<UnpackSummary> {
        self.unpack_with(entries, &UnpackLimits::default())
    }

    fn unpack_with(&self, entries: &[E], limits: &UnpackLimits) -> Result<UnpackSummary> {
        let before = self.outside_snapshot();
        let r = unpack(&archive(entries)[..], &self.dest, limits);
        assert_eq!(
            before,
            self.outside_snapshot(),
            "something outside the workspace changed"
        );
        r
    }
}

/// Unpacks a file of each mode `given` and asserts the mode it got: `(name, given, got)`.
#[track_caller]
fn assert_modes(files: &[(&'static str, u32, u32)]) {
    let s = Sandbox::new();
    let entries: Vec<E> = files.iter().map(|&(p, m, _)| E::FileMode(p, m)).collect();
    s.unpack(&entries).expect("unpacks");
    for &(path, given, got) in files {
        assert_eq!(s.mode(path), got, "{path}: {given:o}");
    }
}

fn expect_unsafe(r: Result<UnpackSummary>, entry: &str, reason: &str) {
    match r {
        Err(Error::UnsafeArchive {
            entry: e,
            reason: why,
        }) => {
            assert_eq!(e, entry, "wrong entry named ({why})");
            assert!(
                why.contains(reason),
                "reason {why:?} should mention {reason:?}"
            );
        }
        other => panic!("want UnsafeArchive for {entry}, got {other:?}"),
    }
}

#[test]
fn a_plain_archive_unpacks() {
    let s = Sandbox::new();
    let sum = s
        .unpack(&[
            E::Dir("./"),
            E::Dir("./job/"),
            E::File("./job/run.sh", b"#!/bin/bash\necho hi\n"),
            E::Sym("./job/latest", "run.sh"),
            E::Hard("./job/copy.sh", "./job/run.sh"),
            E::Sym("./job/up", "../job/run.sh"),
        ])
        .expect("unpacks");
    assert_eq!(sum.files, 2);
    assert_eq!(
        fs::read(s.dest.join("job/latest")).expect("via link"),
        b"#!/bin/bash\necho hi\n"
    );
    assert_eq!(
        fs::read(s.dest.join("job/copy.sh")).expect("hard link"),
        b"#!/bin/bash\necho hi\n"
    );
}

#[test]
fn traversal_and_absolute_paths_fail() {
    expect_unsafe(
        Sandbox::new().unpack(&[E::File("../evil", b"x")]),
        "../evil",
        "..",
    );
    expect_unsafe(
        Sandbox::new().unpack(&[E::File("a/../../evil", b"x")]),
        "a/../../evil",
        "..",
    );
    expect_unsafe(
        Sandbox::new().unpack(&[E::File("/tmp/evil", b"x")]),
        "/tmp/evil",
        "absolute",
    );
    expect_unsafe(Sandbox::new().unpack(&[E::Dir("../d/")]), "../d/", "..");
}

#[test]
fn a_pax_name_with_a_nul_byte_is_unsafe_not_an_io_error() {
    // PAX headers carry any byte: the name below is "ru\0n.sh".
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", &b"ru\0n.sh"[..])])
        .expect("pax");
    let mut h = header(b"run.sh", EntryType::Regular, b"", 2, 0o755);
    h.set_cksum();
    b.append(&h, &b"hi"[..]).expect("append");
    let tar = b.into_inner().expect("tar");
    let dir = tempfile::tempdir().expect("tempdir");
    let r = unpack(&tar[..], dir.path(), &UnpackLimits::default());
    expect_unsafe(r, "ru\\0n.sh", "NUL");
}

#[test]
fn links_that_leave_the_workspace_fail_even_unused() {
    expect_unsafe(
        Sandbox::new().unpack(&[E::Sym("etc", "/etc")]),
        "etc",
        "absolute",
    );
    expect_unsafe(Sandbox::new().unpack(&[E::Sym("up", "..")]), "up", "leaves");
    expect_unsafe(
        Sandbox::new().unpack(&[E::Sym("a/b/up", "../../../outside/secret")]),
        "a/b/up",
        "leaves",
    );
    expect_unsafe(
        Sandbox::new().unpack(&[E::Hard("pw", "/etc/passwd")]),
        "pw",
        "outside",
    );
    expect_unsafe(
        Sandbox::new().unpack(&[E::Hard("pw", "../outside/secret")]),
        "pw",
        "outside",
    );
}

#[test]
fn writing_through_a_planted_link_fails() {
    // The classic: a link to a directory, then a file "inside" it.
    let s = Sandbox::new();
    expect_unsafe(
        s.unpack(&[E::Dir("sub/"), E::Sym("l", "sub"), E::File("l/x", b"x")]),
        "l/x",
        "symlink",
    );
    // A directory entry over a link (the chmod-through-symlink advisory).
    expect_unsafe(
        Sandbox::new().unpack(&[E::Dir("sub/"), E::Sym("l", "sub"), E::Dir("l/")]),
        "l/",
        "symlink",
    );
    // A hard link to a link.
    expect_unsafe(
        Sandbox::new().unpack(&[E::File("f", b"x"), E::Sym("l", "f"), E::Hard("h", "l")]),
        "h",
        "symlink",
    );
}

#[test]
fn a_file_entry_replaces_a_link_instead_of_writing_through_it() {
    let s = Sandbox::new();
    s.unpack(&[
        E::File("target", b"original"),
        E::Sym("l", "target"),
        E::File("l", b"new"),
    ])
    .expect("unpacks");
    assert_eq!(
        fs::read(s.dest.join("target")).expect("target"),
        b"original"
    );
    assert!(fs::symlink_metadata(s.dest.join("l")).expect("l").is_file());
}

#[test]
fn link_chains_that_escape_are_caught() {
    for links in [
        // Each link is lexically inside, but l2 resolves above the root through l1.
        [("a/b", ".."), ("l1", "a/b"), ("l2", "l1/..")],
        // The same, with the link that makes it escape coming after.
        [("a/b", ".."), ("l2", "x/.."), ("x", "a/b")],
    ] {
        let mut entries = vec![E::Dir("a/")];
        entries.extend(links.iter().map(|&(path, target)| E::Sym(path, target)));
        expect_unsafe(Sandbox::new().unpack(&entries), "l2", "outside");
    }
}

#[test]
fn devices_and_fifos_fail() {
    expect_unsafe(
        Sandbox::new().unpack(&[E::Kind("dev", EntryType::Char)]),
        "dev",
        "device",
    );
    expect_unsafe(
        Sandbox::new().unpack(&[E::Kind("blk", EntryType::Block)]),
        "blk",
        "device",
    );
    expect_unsafe(
        Sandbox::new().unpack(&[E::Kind("fifo", EntryType::Fifo)]),
        "fifo",
        "FIFO",
    );
}

#[test]
fn setuid_and_setgid_bits_are_dropped() {
    // The owner can always read and write.
    assert_modes(&[
        ("suid", 0o4755, 0o755),
        ("sgid", 0o2755, 0o755),
        ("ro", 0o400, 0o600),
    ]);
}

#[test]
fn files_larger_than_the_header_limit_unpack() {
    // The header limit bounds what the parser reads between entries, not file content: a file
    // several times the limit (here 3 MiB against 1 KiB) unpacks whole.
    let limits = UnpackLimits {
        max_header_bytes: 1024,
        ..UnpackLimits::default()
    };
    let big: &'static [u8] = (0..3u32 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .leak();
    let s = Sandbox::new();
    let sum = s
        .unpack_with(
            &[E::File("data/big.bin", big), E::File("after", b"ok")],
            &limits,
        )
        .expect("unpacks");
    assert_eq!(sum.files, 2);
    assert_eq!(fs::read(s.dest.join("data/big.bin")).expect("big"), big);
}

#[test]
fn limits_stop_bombs() {
    let small = UnpackLimits {
        max_total_bytes: 10,
        max_entries: 3,
        max_path_bytes: 20,
        max_depth: 3,
        max_header_bytes: 1024,
        max_dir_path_bytes: 1 << 20,
    };
    let s = Sandbox::new();
    expect_unsafe(
        s.unpack_with(&[E::File("big", b"01234567890")], &small),
        "big",
        "max_total_bytes",
    );
    let s = Sandbox::new();
    expect_unsafe(
        s.unpack_with(
            &[
                E::File("a", b""),
                E::File("b", b""),
                E::File("c", b""),
                E::File("d", b""),
            ],
            &small,
        ),
        "d",
        "max_entries",
    );
    expect_unsafe(
        Sandbox::new().unpack_with(&[E::File("a/b/c/d", b"")], &small),
        "a/b/c/d",
        "max_depth",
    );
    expect_unsafe(
        Sandbox::new().unpack_with(&[E::File("aaaaaaaaaaaaaaaaaaaaaaaaa", b"")], &small),
        "aaaaaaaaaaaaaaaaaaaaaaaaa",
        "max_path_bytes",
    );
    // Directories are remembered (for their modes) within a byte budget: here room for three,
    // whether made by a directory entry or as a file's parent.
    let s = Sandbox::new();
    let each = s.dest.join("d1").as_os_str().len() as u64;
    let dirs = UnpackLimits {
        max_dir_path_bytes: 3 * each,
        ..UnpackLimits::default()
    };
    s.unpack_with(&[E::Dir("d1"), E::File("d2/f", b""), E::Dir("d3")], &dirs)
        .expect("three directories fit");
    let s = Sandbox::new();
    expect_unsafe(
        s.unpack_with(
            &[
                E::Dir("d1"),
                E::File("d2/f", b""),
                E::Dir("d3"),
                E::Dir("d4"),
            ],
            &dirs,
        ),
        "d4",
        "max_dir_path_bytes",
    );
}

#[test]
fn a_gigantic_long_name_header_is_refused_with_flat_memory() {
    // A GNU long-name record of 64 MiB (compressed to almost nothing) must not be read into memory.
    let mut raw = Vec::new();
    let size = 64u64 << 20;
    let h = header(b"././@LongLink", EntryType::GNULongName, b"", size, 0o644);
    raw.extend_from_slice(h.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("gz");
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).expect("gz");
    }
    let bytes = gz.finish().expect("gz");
    let s = Sandbox::new();
    let r = unpack(&bytes[..], &s.dest, &UnpackLimits::default());
    expect_unsafe(r, "(extension header)", "header size limit");
}

#[test]
fn a_declared_size_over_the_budget_fails_before_writing() {
    let s = Sandbox::new();
    let limits = UnpackLimits {
        max_total_bytes: 1000,
        ..UnpackLimits::default()
    };
    // The header claims 1 GiB; the body is never read.
    let mut raw = header(b"huge", EntryType::Regular, b"", 1 << 30, 0o644)
        .as_bytes()
        .to_vec();
    raw.extend_from_slice(&[0u8; 1024]);
    expect_unsafe(unpack(&raw[..], &s.dest, &limits), "huge", "declares");
    assert!(!s.dest.join("huge").exists());
}

#[test]
fn truncated_and_empty_archives_fail_cleanly() {
    let bytes = archive(&[E::File("a", b"hello")]);
    let s = Sandbox::new();
    let r = unpack(&bytes[..600], &s.dest, &UnpackLimits::default());
    assert!(matches!(r, Err(Error::UnsupportedArchive(_))), "{r:?}");
    let s = Sandbox::new();
    let r = unpack(&[0u8; 1024][..], &s.dest, &UnpackLimits::default());
    assert!(matches!(r, Err(Error::UnsupportedArchive(_))), "{r:?}");
}

#[test]
fn git_archive_global_headers_are_ignored() {
    let mut b = tar::Builder::new(Vec::new());
    let mut g = Header::new_ustar();
    g.set_path("pax_global_header").expect("path");
    g.set_entry_type(EntryType::XGlobalHeader);
    let rec = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
    g.set_size(rec.len() as u64);
    g.set_cksum();
    b.append(&g, &rec[..]).expect("append");
    let mut h = Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o755);
    b.append_data(&mut h, "proj/run.sh", &b"ok"[..])
        .expect("append");
    let s = Sandbox::new();
    unpack(
        &b.into_inner().expect("tar")[..],
        &s.dest,
        &UnpackLimits::default(),
    )
    .expect("unpacks");
    assert!(s.dest.join("proj/run.sh").is_file());
    assert!(!s.dest.join("pax_global_header").exists());
}

fn arb_path() -> impl Strategy<Value = String> {
    let seg = prop::sample::select(vec!["a", "b", "..", ".", "", "c"]);
    (prop::collection::vec(seg, 1..4), any::<bool>())
        .prop_map(|(segs, abs)| format!("{}{}", if abs { "/" } else { "" }, segs.join("/")))
}

fn arb_entry() -> impl Strategy<Value = (u8, String, String)> {
    (0u8..5, arb_path(), arb_path())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Whatever the archive, nothing outside the workspace changes, and every link left in the
    /// workspace resolves inside it.
    #[test]
    fn arbitrary_archives_keep_the_workspace_invariant(entries in prop::collection::vec(arb_entry(), 1..8)) {
        let s = Sandbox::new();
        let mut b = tar::Builder::new(Vec::new());
        for (kind, path, target) in &entries {
            let (k, link, data): (EntryType, &[u8], &[u8]) = match kind {
                0 => (EntryType::Regular, b"", b"data"),
                1 => (EntryType::Directory, b"", b""),
                2 => (EntryType::Symlink, target.as_bytes(), b""),
                3 => (EntryType::Link, target.as_bytes(), b""),
                _ => (EntryType::Fifo, b"", b""),
            };
            if path.len() > 99 || link.len() > 99 { continue; }
            let h = header(path.as_bytes(), k, link, data.len() as u64, 0o7777);
            b.append(&h, data).expect("append");
        }
        let bytes = b.into_inner().expect("tar");
        let before = s.outside_snapshot();
        let ok = unpack(&bytes[..], &s.dest, &UnpackLimits::default()).is_ok();
        prop_assert_eq!(before, s.outside_snapshot());
        for e in walkdir::WalkDir::new(&s.dest).follow_links(false).into_iter().filter_map(|e| e.ok()) {
            let rel = e.path().strip_prefix(&s.dest).expect("inside");
            let m = fs::symlink_metadata(e.path()).expect("meta");
            prop_assert!(m.mode() & 0o7000 == 0 || m.file_type().is_symlink(), "special bits on {rel:?}");
            if m.file_type().is_symlink() {
                // A failed unpack may leave the offending link behind (the caller removes the
                // workspace); a successful one never does.
                prop_assert!(!ok || resolve_within(&s.dest, rel).is_ok(), "{rel:?} escapes after success");
            }
        }
    }

    /// Random bytes never panic the unpacker.
    #[test]
    fn random_bytes_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let s = Sandbox::new();
        let _ = unpack(&bytes[..], &s.dest, &UnpackLimits::default());
    }
}

#[test]
fn successful_unpacks_leave_only_inside_links() {
    // Deterministic sweep complementing the property above: every archive that unpacks has only
    // links that resolve inside.
    let cases: Vec<Vec<E>> = vec![
        vec![E::Dir("a/"), E::Sym("a/b", ".."), E::Sym("l1", "a/b")],
        vec![E::Sym("x", "y"), E::Dir("y/"), E::Sym("y/z", "../x")],
    ];
    for entries in cases {
        let s = Sandbox::new();
        if s.unpack(&entries).is_ok() {
            for e in walkdir::WalkDir::new(&s.dest)
                .follow_links(false)
                .into_iter()
                .filter_map(|e| e.ok())
            {
                let rel = e.path().strip_prefix(&s.dest).expect("inside");
                if e.path_is_symlink() {
                    assert!(
                        resolve_within(&s.dest, rel).is_ok(),
                        "{entries:?}: {rel:?} escapes"
                    );
                }
            }
        }
    }
}

/// Bytes that do not compress to nothing (xorshift), so an archive spans many read-ahead chunks.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn compress(format: ArchiveFormat, tar: &[u8]) -> Vec<u8> {
    match format {
        ArchiveFormat::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gz");
            e.finish().expect("gz")
        }
        ArchiveFormat::Zstd => zstd::encode_all(tar, 1).expect("zstd"),
        ArchiveFormat::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
            e.write_all(tar).expect("xz");
            e.finish().expect("xz")
        }
        other => panic!("no encoder for {other}"),
    }
}

/// A tree with a file spanning many read-ahead chunks, 300 small files in nested directories, and
/// one path written twice (the later entry wins, as with tar).
fn big_tree() -> (Vec<E>, Vec<(String, Vec<u8>)>) {
    let big: &'static [u8] = noise(3 * CHUNK + 12_345, 7).leak();
    let mut entries = vec![E::File("data/big.bin", big)];
    let mut want = vec![("data/big.bin".to_string(), big.to_vec())];
    for i in 0..300 {
        let path: &'static str = format!("d{}/e{}/f{i}.txt", i % 7, i % 3).leak();
        let body: &'static [u8] = noise(100 + i * 37, i as u64).leak();
        entries.push(E::File(path, body));
        want.push((path.to_string(), body.to_vec()));
    }
    entries.push(E::File("d0/e0/f0.txt", b"second version"));
    want[1].1 = b"second version".to_vec();
    (entries, want)
}

#[test]
fn compressed_archives_unpack_whole_across_read_ahead_chunks() {
    let (entries, want) = big_tree();
    let tar = archive(&entries);
    for format in [ArchiveFormat::Gzip, ArchiveFormat::Zstd, ArchiveFormat::Xz] {
        let s = Sandbox::new();
        let sum = unpack(
            &compress(format, &tar)[..],
            &s.dest,
            &UnpackLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(sum.format, Some(format));
        assert_eq!(sum.files, 302, "{format}");
        for (path, body) in &want {
            let got = fs::read(s.dest.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(got == *body, "{format}: {path} differs");
        }
    }
}

#[test]
fn corrupt_or_refused_compressed_streams_stop_the_read_ahead_thread() {
    let (mut entries, _) = big_tree();
    let tar = archive(&entries);
    for format in [ArchiveFormat::Gzip, ArchiveFormat::Zstd, ArchiveFormat::Xz] {
        let packed = compress(format, &tar);
        // Cut short, and damaged in the middle: a clean error, not a hang or a panic.
        let s = Sandbox::new();
        let r = unpack(
            &packed[..packed.len() / 2],
            &s.dest,
            &UnpackLimits::default(),
        );
        assert!(
            matches!(r, Err(Error::UnsupportedArchive(_))),
            "{format}: {r:?}"
        );
        let mut damaged = packed.clone();
        let mid = damaged.len() / 2;
        for b in &mut damaged[mid..mid + 64] {
            *b = !*b;
        }
        let s = Sandbox::new();
        let r = unpack(&damaged[..], &s.dest, &UnpackLimits::default());
        // gzip and xz carry checksums; a zstd frame without one (zstd's default, as here)
        // may decode damaged bytes, as it does for `zstd -d`.
        if format != ArchiveFormat::Zstd {
            assert!(r.is_err(), "{format}: a damaged stream unpacked: {r:?}");
        }
    }
    // The writer refuses the first entry while the reading thread has megabytes to go: the
    // unpack returns (the thread stops when its reader is dropped).
    entries.insert(0, E::File("../escape", b"x"));
    let packed = compress(ArchiveFormat::Zstd, &archive(&entries));
    let s = Sandbox::new();
    expect_unsafe(
        unpack(&packed[..], &s.dest, &UnpackLimits::default()),
        "../escape",
        "..",
    );
}

#[test]
fn modes_survive_the_umask() {
    // Files are created with their final mode; bits the umask strips are put back.
    let kept = [
        ("rw-all", 0o666),
        ("rwx-all", 0o777),
        ("group", 0o640),
        ("exec", 0o755),
    ];
    assert_modes(&kept.map(|(path, mode)| (path, mode, mode)));
}

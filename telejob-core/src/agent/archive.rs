//! Code archives: format detection by content, decompression, and packing a directory.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The compression around a tar archive, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An uncompressed tar.
    Tar,
    /// gzip (`.tar.gz`, `.tgz`), including multi-member files made by pigz.
    Gzip,
    /// xz (`.tar.xz`).
    Xz,
    /// zstd (`.tar.zst`).
    Zstd,
    /// bzip2 (`.tar.bz2`).
    Bzip2,
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tar => "tar",
            Self::Gzip => "tar.gz",
            Self::Xz => "tar.xz",
            Self::Zstd => "tar.zst",
            Self::Bzip2 => "tar.bz2",
        })
    }
}

const SUPPORTED: &str = "use a .tar, .tar.gz/.tgz, .tar.xz, .tar.zst or .tar.bz2 archive (telejob package DIR makes one)";

/// Whether `block` (the first 512 bytes) is a tar header: the ustar magic, or an old-style header
/// whose checksum is right.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&block[..512]);
    let Ok(stored) = h.cksum() else { return false };
    h.set_cksum();
    h.cksum().ok() == Some(stored) && block[..100].iter().any(|b| *b != 0)
}

/// Detects the format from the first bytes of a file (at least 512 for plain tar).
pub fn detect(head: &[u8]) -> Option<ArchiveFormat> {
    match head {
        [0x1f, 0x8b, ..] => Some(ArchiveFormat::Gzip),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(ArchiveFormat::Xz),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(ArchiveFormat::Zstd),
        [b'B', b'Z', b'h', ..] => Some(ArchiveFormat::Bzip2),
        _ if is_tar_header(head) => Some(ArchiveFormat::Tar),
        _ => None,
    }
}

/// Reads up to `buf.len()` bytes, stopping early only at end of input.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn describe_head(head: &[u8]) -> String {
    if head.is_empty() {
        return "the file is empty".into();
    }
    if head.starts_with(b"PK\x03\x04") {
        return "it is a zip file".into();
    }
    if head.starts_with(b"<") || head.starts_with(b"#!") {
        return "it looks like text (an HTML error page or a script?)".into();
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("unknown format (first bytes {})", hex.join(" "))
}

/// Wraps `input` so that reading it yields the tar stream inside, whatever the compression.
/// Returns the detected format and the tar reader.
///
/// # Errors
///
/// [`Error::UnsupportedArchive`] when the input is not a (compressed) tar archive.
pub fn open_tar<'a>(
    mut input: impl Read + Send + 'a,
) -> Result<(ArchiveFormat, Box<dyn Read + Send + 'a>)> {
    let mut head = [0u8; 512];
    let n = read_up_to(&mut input, &mut head)
        .map_err(|e| Error::UnsupportedArchive(format!("cannot read it: {e}")))?;
    let head = &head[..n];
    let format = detect(head).ok_or_else(|| {
        Error::UnsupportedArchive(format!("{}; {SUPPORTED}", describe_head(head)))
    })?;
    let raw = io::Cursor::new(head.to_vec()).chain(input);
    let decoded: Box<dyn Read + Send + 'a> = match format {
        ArchiveFormat::Tar => return Ok((format, Box::new(raw))),
        ArchiveFormat::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        ArchiveFormat::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(raw)),
        ArchiveFormat::Zstd => Box::new(
            zstd::stream::read::Decoder::new(raw)
                .map_err(|e| Error::UnsupportedArchive(format!("bad zstd stream: {e}")))?,
        ),
        ArchiveFormat::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(raw)),
    };
    // The decompressed stream must itself be a tar archive.
    let mut decoded = decoded;
    let mut inner = [0u8; 512];
    let n = read_up_to(&mut decoded, &mut inner)
        .map_err(|e| Error::UnsupportedArchive(format!("corrupt {format} data: {e}")))?;
    if !is_tar_header(&inner[..n]) && !inner[..n].iter().all(|b| *b == 0) {
        return Err(Error::UnsupportedArchive(format!(
            "{format}-compressed data that is not a tar archive; {SUPPORTED}"
        )));
    }
    Ok((
        format,
        Box::new(io::Cursor::new(inner[..n].to_vec()).chain(decoded)),
    ))
}

/// The regular files and links of a code archive with their modes, paths relative to the code
/// root as a run sees it (an archive whose entries all sit in one top-level folder has that
/// folder as its root). Links count as executable: they are resolved only when unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    files: std::collections::HashMap<String, u32>,
    prefix: Option<String>,
}

impl Listing {
    /// The mode of `path` (relative to the code root), `None` when the archive has no such
    /// file or link.
    pub fn mode_of(&self, path: &str) -> Option<u32> {
        let path = path.trim_start_matches("./");
        match &self.prefix {
            Some(p) => self.files.get(&format!("{p}/{path}")).copied(),
            None => self.files.get(path).copied(),
        }
    }
}

/// Lists a (compressed) tar archive without unpacking it, reading at most `max_bytes` of tar
/// data (a bomb is not inflated past it): `Ok(None)` when the archive is larger than that.
///
/// # Errors
///
/// [`Error::UnsupportedArchive`] for what is not a readable tar archive.
pub fn list(input: impl Read + Send, max_bytes: u64) -> Result<Option<Listing>> {
    let (_, tar) = open_tar(input)?;
    let mut limited = tar.take(max_bytes);
    let mut archive = tar::Archive::new(&mut limited);
    let mut files = std::collections::HashMap::new();
    let mut tops = std::collections::BTreeSet::new();
    let mut top_files = false;
    let entries = archive
        .entries()
        .map_err(|e| Error::UnsupportedArchive(format!("cannot read it: {e}")))?;
    for entry in entries {
        let Ok(entry) = entry else {
            return Ok(None); // cut at the limit, or damaged: nothing to say
        };
        let Ok(path) = entry.path() else { continue };
        let path = path
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        let Some(first) = path.first() else { continue };
        tops.insert(first.clone());
        let kind = entry.header().entry_type();
        if path.len() == 1 && !kind.is_dir() {
            top_files = true;
        }
        let mode = entry.header().mode().unwrap_or(0);
        let mode = if kind.is_symlink() || kind.is_hard_link() {
            0o777
        } else if kind.is_file() {
            mode
        } else {
            continue;
        };
        files.insert(path.join("/"), mode);
    }
    if limited.limit() == 0 {
        return Ok(None);
    }
    let prefix = (tops.len() == 1 && !top_files)
        .then(|| tops.into_iter().next())
        .flatten();
    Ok(Some(Listing { files, prefix }))
}

/// Writes a gzip-compressed tar of `dir` to `out`: regular files, directories and symlinks (as
/// links, never followed), paths relative to `dir`, `.git` directories left out.
///
/// # Errors
///
/// [`Error::Io`] when `dir` cannot be read or `out` written; [`Error::Fetch`] when `dir` holds a
/// special file (FIFO, socket, device) that cannot be archived.
pub fn pack_dir(dir: &Path, out: impl Write) -> Result<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    b.follow_symlinks(false);
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            Error::io(
                path,
                e.into_io_error()
                    .unwrap_or_else(|| io::Error::other("loop in the directory tree")),
            )
        })?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let ft = entry.file_type();
        if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
            return Err(Error::Fetch {
                source_name: dir.display().to_string(),
                reason: format!(
                    "{} is not a file, directory or symlink; remove it",
                    rel.display()
                ),
                retryable: false,
                source: None,
            });
        }
        b.append_path_with_name(entry.path(), rel)
            .map_err(|e| Error::io(entry.path(), e))?;
    }
    let gz = b.into_inner().map_err(|e| Error::io(dir, e))?;
    gz.finish().map_err(|e| Error::io(dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "a.txt", &b"hi"[..]).expect("append");
        b.into_inner().expect("tar")
    }

    fn read_all(input: &[u8]) -> Result<(ArchiveFormat, Vec<u8>)> {
        let (f, mut r) = open_tar(input)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v)
            .map_err(|e| Error::UnsupportedArchive(e.to_string()))?;
        Ok((f, v))
    }

    #[test]
    fn detects_every_format_by_content() {
        let tar = tar_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gz");
        let gz = gz.finish().expect("gz");
        let zst = zstd::encode_all(&tar[..], 3).expect("zstd");
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).expect("xz");
        let xz = xz.finish().expect("xz");
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).expect("bz");
        let bz = bz.finish().expect("bz");
        for (bytes, want) in [
            (&tar, ArchiveFormat::Tar),
            (&gz, ArchiveFormat::Gzip),
            (&zst, ArchiveFormat::Zstd),
            (&xz, ArchiveFormat::Xz),
            (&bz, ArchiveFormat::Bzip2),
        ] {
            let (f, out) = read_all(bytes).expect("opens");
            assert_eq!(f, want);
            assert_eq!(out, tar, "{want} decodes to the tar");
        }
    }

    #[test]
    fn lists_modes_relative_to_the_code_root() {
        let tar_of = |entries: &[(&str, u32)]| {
            let mut b = tar::Builder::new(Vec::new());
            for (path, mode) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_size(1);
                h.set_mode(*mode);
                h.set_cksum();
                b.append_data(&mut h, path, &b"x"[..]).expect("append");
            }
            b.into_inner().expect("tar")
        };
        let flat = list(
            &tar_of(&[("./run.sh", 0o755), ("lib/x.py", 0o644)])[..],
            1 << 20,
        )
        .expect("list")
        .expect("whole");
        assert_eq!(flat.mode_of("./run.sh"), Some(0o755));
        assert_eq!(flat.mode_of("lib/x.py"), Some(0o644));
        assert_eq!(flat.mode_of("go.sh"), None);
        let nested = list(&tar_of(&[("pkg-1.0/run.sh", 0o700)])[..], 1 << 20)
            .expect("list")
            .expect("whole");
        assert_eq!(
            nested.mode_of("run.sh"),
            Some(0o700),
            "a top folder is the root"
        );
        let big = tar_of(&[("a", 0o644), ("b", 0o644), ("c", 0o644)]);
        assert_eq!(list(&big[..], 700).expect("list"), None, "cut at the limit");
    }

    #[test]
    fn rejects_what_is_not_a_tar() {
        for (input, needle) in [
            (&b""[..], "empty"),
            (&b"PK\x03\x04rest"[..], "zip"),
            (&b"<html>404</html>"[..], "text"),
            (&[7u8; 600][..], "unknown format"),
        ] {
            let err = read_all(input).expect_err("must fail").to_string();
            assert!(err.contains(needle), "{err}");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"just some text, not a tar").expect("gz");
        let err = read_all(&gz.finish().expect("gz"))
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("not a tar archive"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]
        /// The lister, fed any bytes, or a real archive (plain or gzip) with bytes changed: it
        /// answers (a listing, "too large", or an unsupported-archive error) and never panics,
        /// and what it says names no path of this host.
        #[test]
        fn any_input_is_listed_or_refused_without_panic(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                0..16,
            ),
            gzip in proptest::prelude::any::<bool>(),
            use_junk in proptest::prelude::any::<bool>(),
        ) {
            let mut input = if use_junk {
                junk
            } else if gzip {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar_bytes()).expect("gz");
                gz.finish().expect("gz")
            } else {
                tar_bytes()
            };
            if !input.is_empty() {
                for (at, b) in edits {
                    let i = at.index(input.len());
                    input[i] = b;
                }
            }
            if let Err(e) = list(&input[..], 1 << 16) {
                let text = e.to_string();
                let tmp = std::env::temp_dir().display().to_string();
                proptest::prop_assert!(!text.contains(&tmp), "{text}");
                proptest::prop_assert!(matches!(e, Error::UnsupportedArchive(_)), "{text}");
            }
        }
    }
}

//! The docs' shell blocks marked runnable (a code block opened with `sh runnable`) run as a new
//! user would type them, from a copy of the repository's examples: each must succeed. `cargo run
//! --` means this build's `telejob`, which is also first on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use telejob_e2e::telejob_bin;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

/// The runnable blocks of `file`: `(first line number, text)`.
fn runnable_blocks(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).expect("doc");
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_start().starts_with("```sh runnable") => {
                open = Some((i + 2, String::new()));
            }
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(open.take());
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(
        open.is_none(),
        "{}: a runnable block is not closed",
        file.display()
    );
    blocks
}

/// Copies the directory `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.expect("walk");
        let dst = to.join(e.path().strip_prefix(from).expect("below"));
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dst).expect("mkdir");
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

#[test]
fn every_runnable_shell_block_of_the_docs_runs() {
    let root = root();
    let mut docs = vec![root.join("README.md")];
    for dir in ["docs", "examples"] {
        for e in walkdir::WalkDir::new(root.join(dir)).max_depth(2) {
            let p = e.expect("walk").into_path();
            if p.extension().is_some_and(|x| x == "md") {
                docs.push(p);
            }
        }
    }
    let bin = PathBuf::from(telejob_bin!());
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for doc in &docs {
        for (line, block) in runnable_blocks(doc) {
            let place = tempfile::tempdir().expect("tmp");
            copy_tree(&root.join("examples"), &place.path().join("examples"));
            let script = format!(
                "set -euo pipefail\n{}",
                block.replace("cargo run --", &format!("'{}'", bin.display()))
            );
            let mut cmd = Command::new("bash");
            cmd.arg("-c")
                .arg(&script)
                .current_dir(place.path())
                .env("PATH", &path)
                .env_remove("TELEJOB_SERVER")
                .env_remove("TELEJOB_TOKEN");
            telejob_e2e::no_first_use_image_build(&mut cmd);
            let o = cmd.output().expect("bash");
            let shown = doc.strip_prefix(&root).unwrap_or(doc).display().to_string();
            assert!(
                o.status.success(),
                "{shown}:{line}: the block failed ({}):\n{block}\nstdout:\n{}\nstderr:\n{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            ran += 1;
        }
    }
    assert!(
        ran >= 4,
        "only {ran} runnable blocks: the markers went missing"
    );
}

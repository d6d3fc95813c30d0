//! `tj-unpack ARCHIVE DEST`: telejob's unpacker (format detected from content), as a command
//! for the side-by-side comparison with GNU tar (`benches/peers/run.py`).

use std::process::ExitCode;

use telejob_core::agent::unpack::{UnpackLimits, unpack};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [archive, dest] = args.as_slice() else {
        eprintln!("usage: tj-unpack ARCHIVE DEST");
        return ExitCode::from(2);
    };
    let limits = UnpackLimits {
        max_total_bytes: u64::MAX,
        max_entries: u64::MAX,
        ..UnpackLimits::default()
    };
    let file = match std::fs::File::open(archive) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tj-unpack: {archive}: {e}");
            return ExitCode::from(2);
        }
    };
    match unpack(
        std::io::BufReader::with_capacity(1 << 20, file),
        dest.as_ref(),
        &limits,
    ) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tj-unpack: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Standard output of the CLI. A reader that goes away (`telejob jobs list | head -1`) ends the
//! command quietly with status 0, as `head` wanted only what it read: no panic, no backtrace.

use std::io::Write;

/// Writes one line to standard output (`println!`'s arguments); exits 0 when the reader is gone.
macro_rules! say {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// Writes `args` and a newline to standard output.
pub(crate) fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        gone(&e);
    }
}

/// Writes `bytes` to standard output as they are.
pub(crate) fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        gone(&e);
    }
}

/// Standard output failed: a reader that went away ends the command with status 0; any other
/// failure with 1, saying so.
fn gone(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("telejob: cannot write to standard output: {e}");
    std::process::exit(1);
}

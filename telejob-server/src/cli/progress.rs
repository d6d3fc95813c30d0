//! What `telejob run` shows while a run goes on.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use telejob_core::compute::{EventSink, RunEvent};
use telejob_core::run::RunState;

/// Prints run events to stderr: phases, the job's output (unless quiet), warnings.
pub fn sink(quiet: bool) -> EventSink {
    let tty = std::io::stderr().is_terminal();
    let at_line_start = Arc::new(Mutex::new(true));
    EventSink::new(move |e| {
        let mut err = std::io::stderr().lock();
        let mut start = at_line_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let phase = |s: &str| {
            if tty {
                format!("\x1b[1m▶ {s}\x1b[0m")
            } else {
                format!("> {s}")
            }
        };
        let line = match e {
            RunEvent::State(RunState::Fetching) => Some(phase("fetching and unpacking the code")),
            RunEvent::State(RunState::Running) => Some(phase("running the command")),
            RunEvent::State(RunState::Publishing) => Some(phase("publishing the output")),
            RunEvent::Warning(w) => Some(if tty {
                format!("\x1b[33m! {w}\x1b[0m")
            } else {
                format!("! {w}")
            }),
            RunEvent::Output(bytes) if !quiet => {
                for piece in bytes.split_inclusive(|b| *b == b'\n') {
                    if *start {
                        let _ = err.write_all(if tty {
                            "\x1b[2m│\x1b[0m ".as_bytes()
                        } else {
                            b"| "
                        });
                    }
                    let _ = err.write_all(piece);
                    *start = piece.ends_with(b"\n");
                }
                None
            }
            _ => None,
        };
        if let Some(l) = line {
            if !*start {
                let _ = writeln!(err);
                *start = true;
            }
            let _ = writeln!(err, "{l}");
        }
    })
}

//! The exit status of a command that followed a run to its end.

use std::process::ExitCode;

use telejob_core::run::RunState;

/// 0 succeeded, 124 timed out (as `timeout(1)`), 130 cancelled (interrupted), 2 when the run
/// failed on bad input (a missing or unsafe tarball), 1 for every other failure.
pub fn status(state: RunState, bad_input: bool) -> u8 {
    match state {
        RunState::Succeeded => 0,
        RunState::TimedOut => 124,
        RunState::Cancelled => 130,
        _ if bad_input => 2,
        _ => 1,
    }
}

/// [`status`] as the process's exit code.
pub fn code(state: RunState, bad_input: bool) -> ExitCode {
    ExitCode::from(status(state, bad_input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_status() {
        assert_eq!(status(RunState::Succeeded, false), 0);
        assert_eq!(status(RunState::Succeeded, true), 0);
        assert_eq!(status(RunState::TimedOut, false), 124);
        assert_eq!(status(RunState::Cancelled, false), 130);
        assert_eq!(status(RunState::Failed, true), 2);
        assert_eq!(status(RunState::Failed, false), 1);
        assert_eq!(status(RunState::Interrupted, false), 1);
    }
}

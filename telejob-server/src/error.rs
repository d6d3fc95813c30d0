//! The binary's own error: input the user must fix (the process exits 2).

/// An error in what the user typed or configured; the process exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Returns a [`BadInput`] error.
pub fn bad(msg: impl Into<String>) -> anyhow::Error {
    BadInput(msg.into()).into()
}

//! The binary's own error: input the user must fix (the process exits 2).

/// An error in what the user typed or configured; the process exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Returns a [`BadInput`] error.
pub fn bad(msg: impl Into<String>) -> anyhow::Error {
    BadInput(msg.into()).into()
}

/// The instant `--flag` gives (RFC 3339), or now when it is absent.
///
/// # Errors
///
/// A [`BadInput`] naming `flag` and the form, when the text is not RFC 3339.
pub fn instant_or_now(
    flag: &str,
    given: Option<&str>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let Some(s) = given else {
        return Ok(chrono::Utc::now());
    };
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            bad(format!(
                "{flag} {s:?}: {e}; use RFC 3339, e.g. 2014-03-08T12:00:00Z"
            ))
        })
}

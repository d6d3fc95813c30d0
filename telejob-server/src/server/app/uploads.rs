//! Where code uploads are received and checked.

/// The most code uploads checked (unpacked) at once; more wait.
pub const UPLOAD_CHECKS: usize = 2;

/// Where code uploads are received and checked: `<data_dir>/uploads`, never the system temp
/// directory, with at most [`UPLOAD_CHECKS`] checks at once, each unpacking at most
/// `max_upload_unpacked_bytes` (a run's own limit is larger: it unpacks on its own disk): so
/// uploads, however hostile, hold at most `UPLOAD_CHECKS × max_upload_unpacked_bytes` of the
/// server's disk beyond the uploads themselves.
#[derive(Debug)]
pub struct Uploads {
    pub(super) dir: std::path::PathBuf,
    pub(super) checks: tokio::sync::Semaphore,
    pub(super) limits: telejob_core::agent::unpack::UnpackLimits,
}

impl Uploads {
    /// Uploads under `<data_dir>/uploads` (made, mode 0700), each checked by unpacking at most
    /// `unpacked_bytes`.
    ///
    /// # Errors
    ///
    /// The directory cannot be made.
    pub fn new(data_dir: &std::path::Path, unpacked_bytes: u64) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = data_dir.join("uploads");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            dir,
            checks: tokio::sync::Semaphore::new(UPLOAD_CHECKS),
            limits: telejob_core::agent::unpack::UnpackLimits {
                max_total_bytes: unpacked_bytes,
                ..telejob_core::agent::unpack::UnpackLimits::default()
            },
        })
    }
}

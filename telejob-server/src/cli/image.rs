//! `telejob image`: the images runs start from — build the default one, list them. The
//! first-use build of `telejob run` and `serve` is [`crate::backends::ensure_image`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use telejob_core::agent::sandbox::MachineOptions;
use telejob_core::agent::sandbox::image::{self, BuildOptions};

use crate::error::bad;

/// Where the images are: the config's `images_dir` and `[images]`, or `--images-dir`.
#[derive(Debug, Args)]
pub struct Place {
    /// A config file, as for `telejob serve` (its `data_dir`, `images_dir`, `[images]`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where images are (default: TELEJOB_IMAGES_DIR, the config's images_dir, or
    /// <data_dir>/images).
    #[arg(long, value_name = "DIR")]
    images_dir: Option<PathBuf>,
}

/// `telejob image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build an image with Debian's mmdebstrap (needs root and the Debian archive): a
    /// bare-bones Debian with git, xz-utils, curl, Python with pip and venv, sudo, and apt's
    /// package lists, so that a job's `apt-get install` works. Replaces an image of that name
    /// once the new one is complete; runs in flight keep the old one.
    Build {
        /// The image's name (lowercase letters, digits and dashes).
        #[arg(default_value = image::DEFAULT_IMAGE)]
        name: String,
        /// The Debian suite.
        #[arg(long, default_value = image::DEFAULT_SUITE)]
        suite: String,
        /// The packages beyond Debian's apt variant, comma-separated (replaces the default
        /// list, which `telejob image build --help` shows).
        #[arg(long, value_delimiter = ',', default_values_t = image::DEFAULT_PACKAGES.iter().map(|p| (*p).to_string()))]
        include: Vec<String>,
        /// The Debian mirror (default: mmdebstrap's, deb.debian.org).
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// List the images of this host, the default one marked.
    List {
        #[command(flatten)]
        place: Place,
    },
}

/// Runs `telejob image …`.
pub fn image(cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Build {
            name,
            suite,
            include,
            mirror,
            place,
        } => {
            let m = place.options()?;
            if !include.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.:".contains(&b))
            }) {
                return Err(bad(
                    "--include: give Debian package names separated by commas, e.g. git,xz-utils,python3",
                ));
            }
            let opts = BuildOptions {
                suite,
                include,
                mirror,
            };
            let dir = crate::backends::build_image(&m, &name, &opts)?;
            say!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::List { place } => {
            let m = place.options()?;
            for name in m.images.names() {
                let root = m.images.resolve(&name)?;
                let mark = if name == m.image { "  (default)" } else { "" };
                say!("{}{mark}", image::describe(&name, &root));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl Place {
    /// The machine options of this place: the config's, with `--images-dir` over them.
    pub fn options(&self) -> anyhow::Result<MachineOptions> {
        machine_options(self.config.as_deref(), self.images_dir.clone(), None)
    }
}

/// The machine options of config file `config` (if any), with `images_dir` and `image` (flags)
/// over the environment's `TELEJOB_IMAGES_DIR` and `TELEJOB_IMAGE`, over the file.
///
/// # Errors
///
/// A config file that cannot be read, a name that cannot be an image's.
pub fn machine_options(
    config: Option<&std::path::Path>,
    images_dir: Option<PathBuf>,
    image: Option<String>,
) -> anyhow::Result<MachineOptions> {
    let cfg = match config {
        Some(p) => crate::config::Config::load(p)?,
        None => crate::config::Config::default(),
    };
    let data_dir = cfg
        .data_dir
        .clone()
        .unwrap_or_else(|| crate::server::settings::defaults::DATA_DIR.into());
    let mut m = crate::backends::machine_options(&cfg.compute_settings(), &data_dir)?;
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = images_dir.or_else(|| env("TELEJOB_IMAGES_DIR").map(PathBuf::from)) {
        m.images.dir = d;
    }
    let image = image.or_else(|| env("TELEJOB_IMAGE").and_then(|v| v.into_string().ok()));
    if let Some(i) = image {
        if !image::valid_name(&i) {
            return Err(bad(format!(
                "--image {i:?}: name an image (lowercase letters, digits and dashes), or host"
            )));
        }
        m.image = i;
    }
    Ok(m)
}

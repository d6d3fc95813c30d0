//! `jobs get`, `jobs apply` and `jobs edit`: a job's settings as a file, and changes that say
//! what they change.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use sha2::Digest;
use telejob_core::job::JobSpec;

use super::settings::{SettingsArgs, without_nulls};
use super::{read_code, upload, warn};
use crate::cli::client::Client;
use crate::error::bad;
use crate::server::app::jobs::without_view_fields;

/// The formats of a job file.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FileFormat {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

/// `telejob jobs get`
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The job.
    name: String,
    /// toml or json.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = FileFormat::Toml)]
    output: FileFormat,
}

/// `telejob jobs apply`
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The job file: TOML or JSON (as `jobs get` prints it), `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// The job's code (a tarball or directory): uploaded when it differs from the current one.
    #[arg(long, value_name = "TARBALL|DIR")]
    code: Option<PathBuf>,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `telejob jobs edit`
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The job.
    name: String,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// A job's settings from its view: what `PUT` takes, without read-only fields and `null`s.
fn settings(view: &Value) -> Value {
    let fields = view.as_object().cloned().unwrap_or_default();
    without_nulls(Value::Object(without_view_fields(fields)))
}

/// `settings` with every default spelled out the way the server stores it, so that a file and
/// the job compare equal when they mean the same (a file that is not a valid job is sent as it
/// is, for the server to say what is wrong).
fn normalized(settings: &Value) -> Value {
    let mut s = settings.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("secrets");
        o.remove("code");
    }
    serde_json::from_value::<JobSpec>(s.clone())
        .ok()
        .and_then(|spec| serde_json::to_value(spec).ok())
        .map_or(s, without_nulls)
}

/// The secrets a body sets or removes, as diff lines (their values are never printed).
fn secret_lines(body: &Value) -> Vec<String> {
    body["secrets"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            if v.is_null() {
                format!("- secrets.{k}")
            } else {
                format!("~ secrets.{k}: (set)")
            }
        })
        .collect()
}

/// `jobs get NAME -o toml|json`.
pub async fn get(c: &Client, a: GetArgs) -> anyhow::Result<()> {
    let view = c
        .json(c.http.get(c.url(&format!("/api/jobs/{}", a.name))))
        .await?;
    let s = settings(&view);
    match a.output {
        FileFormat::Json => super::super::client::print(&s),
        FileFormat::Toml => {
            let t = toml::Value::try_from(&s)?;
            crate::cli::out::bytes(toml::to_string(&t)?.as_bytes());
        }
    }
    Ok(())
}

/// Reads a job file: JSON when it starts with `{`, else TOML.
fn read_file(path: &std::path::Path) -> anyhow::Result<Value> {
    let name = path.display();
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path).map_err(|e| bad(format!("-f {name}: {e}")))?;
    }
    let v: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| bad(format!("-f {name}: not JSON: {e}")))?
    } else {
        toml::from_str(&text).map_err(|e| {
            bad(format!(
                "-f {name}: not TOML: {}",
                e.message().trim_end_matches('\n')
            ))
        })?
    };
    if !v.is_object() {
        return Err(bad(format!(
            "-f {name}: give one job, as `jobs get` prints it"
        )));
    }
    Ok(v)
}

/// `jobs apply -f FILE`: creates the job, or replaces its settings with the file's, printing
/// each setting that changes; a file that says what the job is changes nothing.
pub async fn apply(c: &Client, a: ApplyArgs) -> anyhow::Result<()> {
    let body = read_file(&a.file)?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| {
            bad(format!(
                "-f {}: name: a job file names its job",
                a.file.display()
            ))
        })?
        .to_string();
    let code = a.code.as_deref().map(read_code).transpose()?;
    let path = format!("/api/jobs/{name}");
    let before = c.json_or_none(c.http.get(c.url(&path))).await?;
    let wanted = normalized(&settings(&body));
    let mut lines = crate::cli::out::diff(
        &before
            .as_ref()
            .map(|b| normalized(&settings(b)))
            .unwrap_or_default(),
        &wanted,
    );
    lines.extend(secret_lines(&body));
    let new_code = code.filter(|code| {
        let sha = hex::encode(sha2::Sha256::digest(code));
        before.as_ref().and_then(|b| b["code_sha256"].as_str()) != Some(sha.as_str())
    });
    if new_code.is_some() {
        lines.push("~ code: (a new version)".into());
    }
    for l in &lines {
        say!("{l}");
    }
    if lines.is_empty() {
        say!("{name} unchanged");
        return Ok(());
    }
    if a.dry_run {
        eprintln!("(dry run: nothing changed)");
        return Ok(());
    }
    let saved = if before.is_none() {
        c.json(c.http.post(c.url("/api/jobs")).json(&body)).await?
    } else if lines.iter().any(|l| !l.starts_with("~ code:")) {
        c.json(c.http.put(c.url(&path)).json(&body)).await?
    } else {
        Value::Null
    };
    let up = match (new_code, &a.code) {
        (Some(code), Some(from)) => upload(c, &name, code, from).await?,
        _ => Value::Null,
    };
    warn(&[&saved, &up]);
    say!(
        "{} {name}",
        if before.is_none() {
            "created"
        } else {
            "configured"
        }
    );
    Ok(())
}

/// `jobs edit NAME --flag …`: a JSON Merge Patch of the flags given; prints what changed.
pub async fn edit(c: &Client, a: EditArgs) -> anyhow::Result<()> {
    let patch = a.settings.patch()?;
    if patch.is_empty() {
        return Err(bad(
            "nothing to change: give a setting, such as --timeout 3h or --env KEY=VALUE (see --help)",
        ));
    }
    let path = format!("/api/jobs/{}", a.name);
    let before = c.json(c.http.get(c.url(&path))).await?;
    let after = c
        .json(
            c.http
                .patch(c.url(&path))
                .json(&Value::Object(patch.clone())),
        )
        .await?;
    let mut lines = crate::cli::out::diff(&settings(&before), &settings(&after));
    lines.extend(secret_lines(&Value::Object(
        patch
            .into_iter()
            .filter(|(k, _)| k == "secrets")
            .collect::<Map<_, _>>(),
    )));
    for l in &lines {
        say!("{l}");
    }
    warn(&[&after]);
    if lines.is_empty() {
        say!("{} unchanged", a.name);
    } else {
        say!("edited {}", a.name);
    }
    Ok(())
}

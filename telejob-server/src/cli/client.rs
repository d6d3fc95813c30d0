//! What every client verb shares: where the server is ([`ServerArgs`]), the HTTP client with
//! its token and one-line errors ([`Client`]), and how runs are printed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use telejob_core::run::RunState;

use crate::error::bad;

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server's URL.
    #[arg(
        long,
        env = "TELEJOB_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// An API token. Default: TELEJOB_TOKEN, else the admin token of --data-dir.
    #[arg(long, env = "TELEJOB_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A server data directory whose admin.token to use when no token is given.
    #[arg(
        long,
        env = "TELEJOB_DATA_DIR",
        default_value = "telejob-data",
        global = true
    )]
    data_dir: PathBuf,
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(super) fn new(a: &ServerArgs) -> anyhow::Result<Self> {
        let token = match &a.token {
            Some(t) => t.clone(),
            None => {
                let f = a.data_dir.join("admin.token");
                std::fs::read_to_string(&f).map(|s| s.trim().to_string()).map_err(|_| {
                    bad(format!(
                        "no token: pass --token or set TELEJOB_TOKEN (or point --data-dir at the server's data directory; {} is not readable)",
                        f.display()
                    ))
                })?
            }
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: a.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let r = self.raw(req).await?;
        self.checked(r).await
    }

    /// Sends `req` with the token, whatever the answer.
    async fn raw(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))
    }

    /// `r` if it succeeded, else its error in one line (a 4xx is the user's mistake: exit 2).
    async fn checked(&self, r: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let path = r.url().path().to_string();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let mut msg = body["error"]
            .as_str()
            .map_or_else(|| status.to_string(), str::to_string);
        if status == reqwest::StatusCode::NOT_FOUND {
            // "no such job" says what, the path says which.
            msg = format!("{msg}: {path}");
        }
        if status.is_client_error() {
            Err(bad(format!("{msg} (HTTP {})", status.as_u16())))
        } else {
            Err(anyhow::anyhow!("{msg} (HTTP {})", status.as_u16()))
        }
    }

    /// `POST path`, which starts a run (run now, replay): the run's id.
    pub(super) async fn start_run(&self, path: &str) -> anyhow::Result<String> {
        let r = self.json(self.http.post(self.url(path))).await?;
        Ok(r["run_id"].as_str().unwrap_or_default().to_string())
    }

    pub(super) async fn json(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        Ok(self.send(req).await?.json().await?)
    }

    /// The JSON answer, or `None` when the server says 404 (the thing does not exist).
    pub(super) async fn json_or_none(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<Option<Value>> {
        let r = self.raw(req).await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(self.checked(r).await?.json().await?))
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until run `id` has ended, asking the server to hold each answer up to 300 s.
    pub(super) async fn wait_run(&self, id: &str) -> anyhow::Result<Value> {
        loop {
            let run = self
                .json(self.http.get(self.url(&format!("/api/runs/{id}?wait=300"))))
                .await?;
            if !matches!(
                run["state"].as_str(),
                Some("pending" | "fetching" | "running" | "publishing")
            ) {
                return Ok(run);
            }
        }
    }
}

pub(super) fn print(v: &Value) {
    say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The string `key` of the object `v`, or `default` when it has none.
pub(super) fn text_or<'a>(v: &'a Value, key: &str, default: &'a str) -> &'a str {
    v[key].as_str().unwrap_or(default)
}

pub(super) fn run_line(r: &Value) -> String {
    let t = |k| text_or(r, k, "");
    format!(
        "{}  {:<11} {:<9} {}{}",
        t("id"),
        t("state"),
        t("trigger"),
        t("scheduled_for"),
        r["error"]
            .as_str()
            .map(|e| format!("  {e}"))
            .unwrap_or_default()
    )
}

pub(super) fn exit_for(run: &Value) -> ExitCode {
    match serde_json::from_value::<RunState>(run["state"].clone()) {
        Ok(state) => super::exit::code(state, false),
        Err(_) => ExitCode::from(1),
    }
}

//! `telejob serve` driven over HTTP, as clients and operators meet it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telejob_e2e::{
    assert_refused, csrf_of, days_ago, processes_with, slot_run_ids, strings_of, tarball,
    telejob_bin, webhook_sink, write_script_tarball,
};

use telejob_e2e::{Api, Server};

mod advice;
mod api;
mod cli;
mod code;
mod dashboard;
mod fair;
mod notify;
mod runs;
mod tenants;

/// `telejob serve` of this build on `data`, with `extra` arguments.
fn serve(data: &Path, extra: &[&str]) -> Server {
    Server::start(telejob_bin!(), data, extra)
}

/// `telejob serve` of this build on a new temporary `dir`, and its admin's API client.
fn fresh() -> (tempfile::TempDir, Server, Api) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(dir.path(), &[]);
    let api = srv.admin();
    (dir, srv, api)
}

/// `telejob serve` of this build on `<dir>/data` with the config file `<dir>/telejob.toml`
/// holding `toml`, in a new temporary `dir`.
fn configured(toml: impl AsRef<str>) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("telejob.toml");
    std::fs::write(&cfg, toml.as_ref()).expect("config");
    let srv = serve(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("utf-8")],
    );
    (dir, srv)
}

/// A new token for `user`, made on the server's host.
fn token_for(data: &Path, user: &str) -> String {
    telejob_e2e::token_for(telejob_bin!(), data, user)
}

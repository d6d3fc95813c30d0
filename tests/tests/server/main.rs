//! `telejob serve` driven over HTTP, as clients and operators meet it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telejob_e2e::{processes_with, tarball, telejob_bin, webhook_sink};

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

/// A new token for `user`, made on the server's host.
fn token_for(data: &Path, user: &str) -> String {
    telejob_e2e::token_for(telejob_bin!(), data, user)
}

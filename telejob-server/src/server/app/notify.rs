//! Notifications: a JSON POST to the job's webhook and email through SMTP, each event sent once,
//! retried with backoff; a delivery failure never changes a run's outcome.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use telejob_core::scheduler::notify::{EventKind, JobEvent, Notifier};

use crate::config::SmtpConfig;
use crate::server::db::Db;

/// Attempts per delivery.
const ATTEMPTS: u32 = 5;

/// Lines of a run's log a notification carries.
const LOG_TAIL_LINES: usize = 20;

/// What a run's notification links to and quotes: the dashboard and the run's (masked) log.
#[derive(Clone)]
pub struct RunLinks {
    /// The dashboard's address (`public_url`), without a trailing `/`.
    pub public_url: String,
    /// The private store, where run logs are.
    pub logs: std::sync::Arc<dyn telejob_core::store::Store>,
}

impl std::fmt::Debug for RunLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLinks")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Delivers job events.
#[derive(Debug, Clone)]
pub struct ServerNotifier {
    db: Db,
    links: RunLinks,
    http: reqwest::Client,
    smtp: Option<SmtpConfig>,
    first_backoff: Duration,
    allow_private: bool,
}

impl ServerNotifier {
    /// A notifier recording deliveries in `db`; webhooks go to public addresses only, unless
    /// `allow_private` (see [`super::targets`]).
    pub fn new(
        db: Db,
        links: RunLinks,
        smtp: Option<SmtpConfig>,
        allow_private: bool,
    ) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("telejob/", env!("CARGO_PKG_VERSION")))
            // A redirect could lead anywhere the check did not look.
            .redirect(reqwest::redirect::Policy::none());
        if !allow_private {
            http = http.dns_resolver(super::targets::PublicOnly);
        }
        Ok(Self {
            db,
            links,
            http: http.build()?,
            smtp,
            first_backoff: Duration::from_secs(1),
            allow_private,
        })
    }

    /// The run's page and the last lines of its log, for an event about a run.
    async fn run_details(&self, ev: &JobEvent) -> Option<(String, String)> {
        let run = ev.run.as_ref()?;
        let url = format!("{}/runs/{}", self.links.public_url, run.id);
        let tail = super::logs::tail(self.links.logs.as_ref(), run, LOG_TAIL_LINES)
            .await
            .unwrap_or_default();
        Some((url, tail))
    }

    async fn webhook(
        &self,
        url: &str,
        ev: &JobEvent,
        details: Option<&(String, String)>,
    ) -> Result<(), String> {
        let mut body = match ev.kind {
            EventKind::WorkerEndingSoon | EventKind::WorkerEnded => json!({
                "event": ev.kind,
                "worker": ev.job,
                "message": ev.message,
                "at": ev.at,
            }),
            _ => json!({
                "event": ev.kind,
                "job": ev.job,
                "message": ev.message,
                "at": ev.at,
                "run": ev.run,
            }),
        };
        if let Some((run_url, tail)) = details {
            body["run_url"] = json!(run_url);
            body["log_tail"] = json!(tail);
        }
        super::targets::check_url(url, self.allow_private)?;
        let r = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", r.status()))
        }
    }

    async fn email(
        &self,
        to: &[String],
        ev: &JobEvent,
        details: Option<&(String, String)>,
    ) -> Result<(), String> {
        let Some(cfg) = &self.smtp else {
            return Err(
                "no [smtp] configured on the server; email notifications are not sent".into(),
            );
        };
        let from: Mailbox = cfg.from.parse().map_err(|e| format!("smtp.from: {e}"))?;
        let mut b = Message::builder()
            .from(from)
            .subject(format!("[telejob] {}: {:?}", ev.job, ev.kind));
        for t in to {
            b = b.to(t.parse().map_err(|e| format!("{t}: {e}"))?);
        }
        let mut text = format!("{}\n\nAt: {}\nJob: {}\n", ev.message, ev.at, ev.job);
        if let Some((run_url, tail)) = details {
            text.push_str(&format!("Run: {run_url}\n"));
            if !tail.is_empty() {
                text.push_str(&format!(
                    "\nThe last lines of its log:\n\n{}\n",
                    tail.lines()
                        .map(|l| format!("    {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
        let msg = b.body(text).map_err(|e| e.to_string())?;
        let builder = match cfg.tls.as_str() {
            "tls" => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host).map_err(|e| e.to_string())?
            }
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host),
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)
                .map_err(|e| e.to_string())?,
        };
        let mut builder = builder
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(20)));
        let password = std::env::var("TELEJOB_SMTP_PASSWORD")
            .ok()
            .or_else(|| cfg.password.clone());
        if let (Some(u), Some(p)) = (&cfg.username, password) {
            builder = builder.credentials(Credentials::new(u.clone(), p));
        }
        builder
            .build()
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Tries `f` up to [`ATTEMPTS`] times with doubling, jittered waits.
    async fn with_retries<'a, F, Fut>(&self, key: &str, what: &str, f: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>> + 'a,
    {
        let mut wait = self.first_backoff;
        for attempt in 1..=ATTEMPTS {
            let r = f().await;
            let _ = self
                .db
                .notification_attempt(key, r.as_ref().err().map(String::as_str))
                .await;
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(event = key, attempt, error = %e, "{what} notification failed");
                    if attempt < ATTEMPTS {
                        let jitter = Duration::from_millis(u64::from(rand_u16()) % 250);
                        tokio::time::sleep(wait + jitter).await;
                        wait *= 2;
                    }
                }
            }
        }
        tracing::error!(
            event = key,
            "{what} notification given up after {ATTEMPTS} attempts"
        );
    }
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b)
}

#[async_trait]
impl Notifier for ServerNotifier {
    async fn notify(&self, ev: JobEvent) {
        if ev.notify.is_empty() {
            return;
        }
        let key = ev.dedupe_key();
        match self
            .db
            .claim_notification(&key, ev.job.as_str(), &format!("{:?}", ev.kind))
            .await
        {
            Ok(true) => {}
            Ok(false) => return, // sent before
            Err(e) => {
                tracing::error!(event = key, error = %e, "cannot record the notification; not sending it");
                return;
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            // Read once for every attempt of every target.
            let details = me.run_details(&ev).await;
            if let Some(url) = ev.notify.webhook.clone() {
                me.with_retries(&key, "webhook", || me.webhook(&url, &ev, details.as_ref()))
                    .await;
            }
            if !ev.notify.email.is_empty() {
                let to = ev.notify.email.clone();
                me.with_retries(&key, "email", || me.email(&to, &ev, details.as_ref()))
                    .await;
            }
        });
    }
}

//! The server's services: what the HTTP layer calls and the background watches run, over the
//! database. The one write path for jobs ([`jobs`]), workers, the scheduler lease between
//! replicas ([`cluster`]), notifications, the late watch, secrets, sessions, tokens, metrics.

pub mod advice;
pub mod cluster;
pub mod errors;
pub mod example;
pub mod fence;
pub mod jobs;
pub mod late;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod published;
pub mod quotas;
pub mod sessions;
pub mod state;
pub mod targets;
pub mod tokens;
pub mod uploads;
pub mod workers;

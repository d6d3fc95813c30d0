//! The API's error reply: a status, one line, the offending field, and every field problem.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::app::jobs::JobError;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    errors: Vec<(String, String)>,
    retry_after: Option<u64>,
}

/// What API handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `status` and a one-line message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }
    /// The status the reply carries.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The field the reply names.
    #[cfg(test)]
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
    /// The same error with another status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
    /// 401.
    pub fn unauthorized(m: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    /// 404 for `what`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no such {what}"))
    }
    /// 403.
    pub fn forbidden(m: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    /// 400 naming `field`: the request is malformed there (not JSON, a query parameter of the
    /// wrong type, a key given twice).
    pub fn bad_field(field: &str, m: impl Into<String>) -> Self {
        let m = m.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {m}"),
            field: Some(field.to_string()),
            errors: vec![(field.to_string(), m)],
            retry_after: None,
        }
    }
    /// 422 naming `field`.
    pub fn invalid(field: &str, m: impl Into<String>) -> Self {
        Self::bad_field(field, m).with_status(StatusCode::UNPROCESSABLE_ENTITY)
    }
    /// 422 listing every field problem of a validation error.
    pub fn from_validation(e: &telejob_core::Error) -> Self {
        let errors: Vec<(String, String)> = e
            .field_errors()
            .into_iter()
            .map(|(f, r)| (f.to_string(), r.to_string()))
            .collect();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.to_string(),
            field: errors.first().map(|(f, _)| f.clone()),
            errors,
            retry_after: None,
        }
    }
}

impl From<telejob_core::Error> for ApiError {
    fn from(e: telejob_core::Error) -> Self {
        match &e {
            telejob_core::Error::InvalidJob { .. } | telejob_core::Error::InvalidJobs(_) => {
                Self::from_validation(&e)
            }
            telejob_core::Error::NotFound(what) => {
                Self::new(StatusCode::NOT_FOUND, format!("not found: {what}"))
            }
            // A follower handed a run to the leader, and no leader recorded it.
            telejob_core::Error::Compute { op: "run now", .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            _ => {
                tracing::error!(error = %e, "request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<telejob_core::Error>() {
            Ok(core) => core.into(),
            Err(e) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound => Self::not_found("job"),
            JobError::Forbidden => Self::forbidden(&e.to_string()),
            JobError::NameTaken(_) | JobError::NameReserved(_) | JobError::NameHeld { .. } => {
                Self {
                    field: Some("name".into()),
                    ..Self::new(StatusCode::CONFLICT, e.to_string())
                }
            }
            JobError::Deleting(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            JobError::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            JobError::Interrupted(_) => Self::bad_field("body", e.to_string()),
            JobError::OverQuota { field, message } => Self::invalid(field, message),
            JobError::RateLimited {
                retry_after,
                message,
            } => Self {
                retry_after: Some(retry_after),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
            },
            JobError::Invalid(e) | JobError::Failed(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors: Vec<_> = self
            .errors
            .iter()
            .map(|(f, m)| json!({"field": f, "message": m}))
            .collect();
        let body = json!({"error": self.message, "field": self.field, "errors": errors});
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

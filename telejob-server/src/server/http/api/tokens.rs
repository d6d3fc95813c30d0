//! `/api/tokens`: admins make tokens for users.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::body::{JsonBody, parse_json};
use super::caller::Caller;
use super::error::{ApiError, ApiResult};
use crate::server::app::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    label: Option<String>,
}

/// `POST /api/tokens` (admins only).
pub async fn create(
    State(s): State<AppState>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    if !caller.is_admin {
        return Err(ApiError::forbidden("only admins may create tokens"));
    }
    let req: TokenRequest = parse_json(&body)?;
    telejob_core::job::validate_user_name(&req.user)
        .map_err(|e| ApiError::invalid("user", e.to_string()))?;
    let token = s
        .tokens
        .create(&s.db, &req.user, req.admin, req.label.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": req.user, "token": token})),
    )
        .into_response())
}

//! The authenticated caller of an API request: `Authorization: Bearer <token>`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::server::app::state::AppState;
use crate::server::db::User;

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("use Authorization: Bearer <token>"))?;
        state
            .tokens
            .check(&state.db, token)
            .await
            .map(Caller)
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

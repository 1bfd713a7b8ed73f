//! Who is calling: every `/api/v1/` route except the OpenAPI document takes a [`Reader`] or
//! a [`Writer`], which check the `Authorization: Bearer <key>` header against the stored
//! keys. The key itself is never logged or echoed.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::ApiState;
use super::problem::Problem;
use crate::store::api_keys::{self, KeyInfo, Scope};

/// A caller with a valid key (read or write).
pub struct Reader(#[allow(dead_code)] pub KeyInfo);

/// A caller with a valid write key.
pub struct Writer(pub KeyInfo);

impl FromRequestParts<ApiState> for Reader {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, Problem> {
        key(parts, s).await.map(Reader)
    }
}

impl FromRequestParts<ApiState> for Writer {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, Problem> {
        let key = key(parts, s).await?;
        if key.scope < Scope::Write {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the API key `{}` may only read; this request needs a write key",
                    key.name
                ),
            ));
        }
        Ok(Writer(key))
    }
}

async fn key(parts: &Parts, s: &ApiState) -> Result<KeyInfo, Problem> {
    let unauthorized = |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, detail);
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing `Authorization: Bearer <API key>`; create a key with `gochat api-key create`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must read `Bearer <API key>`"))?;
    api_keys::verify(s.store.conn(), token)
        .await?
        .ok_or_else(|| unauthorized("the API key is not valid: unknown, mistyped or revoked"))
}

//! Errors as `application/problem+json` (RFC 9457): every failure of the API, including a
//! malformed body, an unknown path or a timeout, answers with one shape a client can parse.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// One problem: the status, a short title that depends only on the kind of problem, and a
/// `detail` saying what exactly was wrong; `field` names the offending parameter or body
/// field when there is one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The query parameter, header or body field at fault, e.g. `limit` or `body.to[0]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        }
    }

    /// A bad value in a named field (400 unless the caller says otherwise).
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.into()),
            ..Problem::new(StatusCode::BAD_REQUEST, detail)
        }
    }

    pub fn unprocessable(field: Option<String>, detail: impl Into<String>) -> Problem {
        Problem {
            field,
            ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Database failures: the outage is the server's problem (503, retry later), and its text is
/// logged, not shown (it may name tables or hosts).
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::NotFound { what, id } => Problem::not_found(format!("no {what} {id}")),
            StoreError::Invalid(m) => Problem::unprocessable(None, m),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "API request failed: database unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; try again shortly",
                )
            }
            e => {
                tracing::error!(error = %e, "API request failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the request failed on the server; it has been logged",
                )
            }
        }
    }
}

/// The errors every read may answer, for the OpenAPI document (`responses(ReadErrors)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    #[response(
        status = 400,
        description = "A bad parameter (named in `field`)",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    #[response(
        status = 401,
        description = "No valid API key",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 404,
        description = "No such thread, customer, message or attachment",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    #[response(
        status = 414,
        description = "The query string is longer than 60 KiB",
        content_type = "application/problem+json"
    )]
    UriTooLong(Problem),
}

/// The errors every write may answer, for the OpenAPI document (`responses(WriteErrors)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum WriteErrors {
    #[response(
        status = 400,
        description = "A bad parameter or header (named in `field`)",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    #[response(
        status = 401,
        description = "No valid API key",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "A read-only key",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    #[response(
        status = 404,
        description = "No such thread",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    #[response(
        status = 413,
        description = "The body is larger than api.max_body",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "The body is not JSON",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
    #[response(
        status = 422,
        description = "Nothing to do, not a valid job, or (with `wait`) the worker dead-lettered it: `detail` says why",
        content_type = "application/problem+json"
    )]
    Unprocessable(Problem),
    #[response(
        status = 503,
        description = "The message queue is unreachable; retry",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

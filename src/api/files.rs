//! Downloads: an attachment's bytes and an inbound message's raw mail. Both are answered as
//! attachments (never rendered inline by a browser) with `nosniff`, so a file a customer
//! sent cannot run as a page of the API's origin.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use uuid::Uuid;

use super::ApiState;
use super::auth::Reader;
use super::problem::{Problem, ReadErrors};
use crate::store::files;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/messages/{id}/attachments/{attachment_id}",
            get(attachment),
        )
        .route("/api/v1/messages/{id}/raw", get(raw))
}

#[utoipa::path(
    get, path = "/api/v1/messages/{id}/attachments/{attachment_id}", tag = "files",
    params(
        ("id" = Uuid, Path, description = "The message's id"),
        ("attachment_id" = Uuid, Path, description = "The attachment's id (from the feed)"),
    ),
    responses(
        (status = 200, description = "The file, with the media type it was sent with", content_type = "*/*", body = Vec<u8>),
        ReadErrors,
    ),
    security(("api_key" = []))
)]
pub async fn attachment(
    State(s): State<ApiState>,
    _: Reader,
    Path((id, attachment_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let message = uuid("id", &id)?;
    let attachment = uuid("attachment_id", &attachment_id)?;
    let Some(file) = files::attachment(s.store.conn(), message, attachment).await? else {
        return Err(Problem::not_found(format!(
            "no attachment {attachment} on message {message}"
        )));
    };
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition(&file.name)),
        ],
        file.data,
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/api/v1/messages/{id}/raw", tag = "files",
    params(("id" = Uuid, Path, description = "The message's id")),
    responses(
        (status = 200, description = "The raw mail as received", content_type = "message/rfc822", body = Vec<u8>),
        ReadErrors,
    ),
    security(("api_key" = []))
)]
pub async fn raw(
    State(s): State<ApiState>,
    _: Reader,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let message = uuid("id", &id)?;
    match files::raw_mail(s.store.conn(), message).await? {
        None => Err(Problem::not_found(format!("no message {message}"))),
        Some(None) => Err(Problem::not_found(format!(
            "message {message} has no raw mail: only inbound mail keeps one"
        ))),
        Some(Some(data)) => Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("message/rfc822"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    disposition(&format!("{message}.eml")),
                ),
            ],
            data,
        )
            .into_response()),
    }
}

fn uuid(field: &str, s: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(s).map_err(|_| {
        Problem::invalid(
            field,
            format!(
                "{:?} is not an id (a UUID)",
                crate::text::escape_controls(s)
            ),
        )
    })
}

/// `attachment; filename="…"; filename*=UTF-8''…`: an ASCII fallback with quotes, controls
/// and separators replaced, and the exact name percent-encoded (RFC 6266).
fn disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | ';' | '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_break_the_header() {
        let h = disposition("a\"b;\r\nc/ü.pdf");
        let s = h.to_str().unwrap();
        assert!(
            s.starts_with("attachment; filename=\"a_b___c__.pdf\""),
            "{s}"
        );
        assert!(
            s.ends_with("filename*=UTF-8''a%22b%3B%0D%0Ac%2F%C3%BC.pdf"),
            "{s}"
        );
    }
}

//! JSON request bodies, read with the configured size limit and decoded so that an error
//! names the field at fault (`body.to[1]: invalid type: integer, expected a string`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// A JSON body of type `T`.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json") || m.ends_with("+json")
            });
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            Problem::new(
                e.status(),
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "the request body is larger than api.max_body".to_owned()
                } else {
                    "the request body could not be read".to_owned()
                },
            )
        })?;
        decode(&bytes).map(Body)
    }
}

/// Decodes `bytes`, naming the path of the first bad field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_owned()
        } else {
            format!("body.{path}")
        };
        let inner = e.into_inner();
        let detail = if inner.is_syntax() || inner.is_eof() {
            format!("the body is not valid JSON: {inner}")
        } else {
            format!("{field}: {inner}")
        };
        Problem::unprocessable(Some(field), crate::text::escape_controls(&detail))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        to: Vec<String>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = decode::<T>(br#"{"to": ["a", 3]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body.to[1]"));
        assert_eq!(e.status, 422);
        let e = decode::<T>(br#"{"to": "#).unwrap_err();
        assert!(e.detail.contains("not valid JSON"), "{}", e.detail);
        let e = decode::<T>(br#"{}"#).unwrap_err();
        assert!(e.detail.contains("missing field `to`"), "{}", e.detail);
    }
}

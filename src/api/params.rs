//! The query string, parsed by hand rather than by `serde_urlencoded`, so that a repeated
//! parameter (`status=open&status=waiting`) works, an unknown one is refused by name (a
//! typo like `stauts=open` must not silently return the whole inbox), and every error says
//! which parameter was wrong.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::problem::Problem;

/// The longest query string accepted; longer ones are refused (414) before parsing. Every
/// query the OpenAPI document allows fits (each parameter has a length limit: 20 tags of 200
/// four-byte characters, percent-encoded, are 48,000 bytes), and it stays under the 65,534
/// bytes an HTTP library can put in a URI.
pub const MAX_QUERY_BYTES: usize = 60 * 1024;

pub struct Params {
    values: BTreeMap<String, Vec<String>>,
}

impl Params {
    /// Parses `raw`, refusing parameters not in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, Problem> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY_BYTES {
            return Err(Problem::new(
                axum::http::StatusCode::URI_TOO_LONG,
                format!("the query string is longer than {MAX_QUERY_BYTES} bytes"),
            ));
        }
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(Problem::invalid(
                    k.as_ref(),
                    format!(
                        "unknown query parameter `{}`; this endpoint takes: {}",
                        crate::text::escape_controls(&k),
                        allowed.join(", ")
                    ),
                ));
            }
            if v.chars().any(char::is_control) {
                return Err(Problem::invalid(
                    k.as_ref(),
                    format!("`{k}` contains control characters"),
                ));
            }
            values
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
        Ok(Params { values })
    }

    /// A parameter given at most once.
    pub fn one(&self, name: &str) -> Result<Option<&str>, Problem> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(Problem::invalid(
                name,
                format!("`{name}` may be given only once"),
            )),
        }
    }

    /// Every value of a list parameter: repeated (`tag=a&tag=b`) or comma-separated
    /// (`tag=a,b`); empty items are dropped.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.values
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A non-empty text of at most `max` characters.
    pub fn text(&self, name: &str, max: usize) -> Result<Option<&str>, Problem> {
        let Some(v) = self.one(name)? else {
            return Ok(None);
        };
        if v.trim().is_empty() {
            return Err(Problem::invalid(name, format!("`{name}` is empty")));
        }
        if v.chars().count() > max {
            return Err(Problem::invalid(
                name,
                format!("`{name}` is longer than {max} characters"),
            ));
        }
        Ok(Some(v))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, Problem> {
        match self.one(name)? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(Problem::invalid(
                name,
                format!(
                    "`{name}` must be true or false, found {:?}",
                    crate::text::escape_controls(v)
                ),
            )),
        }
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, min: u64, max: u64, default: u64) -> Result<u64, Problem> {
        let Some(v) = self.one(name)? else {
            return Ok(default);
        };
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Problem::invalid(
                name,
                format!(
                    "`{name}` must be a whole number from {min} to {max}, found {:?}",
                    crate::text::escape_controls(v)
                ),
            )),
        }
    }

    /// An RFC 3339 time such as `2026-12-07T10:00:00Z`.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Problem> {
        let Some(v) = self.one(name)? else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                Problem::invalid(
                    name,
                    format!(
                        "`{name}` must be an RFC 3339 time such as 2026-12-07T10:00:00Z, found {:?}",
                        crate::text::escape_controls(v)
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_comma_separated_lists() {
        let p = Params::parse(
            Some("status=open&status=waiting,closed&tag="),
            &["status", "tag"],
        )
        .unwrap();
        assert_eq!(p.list("status"), ["open", "waiting", "closed"]);
        assert!(p.list("tag").is_empty());
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = Params::parse(Some("stauts=open"), &["status"])
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("stauts"));
        let p = Params::parse(Some("limit=1&limit=2"), &["limit"]).unwrap();
        assert_eq!(
            p.int("limit", 1, 200, 50).err().unwrap().field.as_deref(),
            Some("limit")
        );
        let p = Params::parse(Some("limit=0"), &["limit"]).unwrap();
        assert!(p.int("limit", 1, 200, 50).is_err());
        let p = Params::parse(Some("limit=%F0%9F%92%A9"), &["limit"]).unwrap();
        assert!(p.int("limit", 1, 200, 50).is_err());
    }
}

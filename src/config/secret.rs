//! A URL that may carry a password (AMQP, SMTP, PostgreSQL) and must never print it.
//!
//! Config values are logged at start-up and end up in error messages; wrapping every
//! credential-bearing URL in [`SecretUrl`] makes "no secrets in logs" a property of the type
//! instead of a rule every call site has to remember.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A connection URL whose `Display` and `Debug` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The real URL, to hand to a client library. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`, safe for logs.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// Replaces the password of `scheme://user:password@host` by `***`. A URL that does not
/// parse (a typo is exactly when it gets printed, in the error) is redacted by its text: the
/// part between the first `:` and the last `@` of what follows `://`.
pub fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            // set_password only fails on URLs that cannot have one, excluded by the guard.
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) => redact_text(raw),
    }
}

fn redact_text(raw: &str) -> String {
    let Some(start) = raw.find("://").map(|i| i + 3) else {
        return raw.to_owned();
    };
    let rest = &raw[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &raw[..start],
            &authority[..colon],
            &raw[start + at..]
        ),
        _ => raw.to_owned(),
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden_in_display_and_debug() {
        let url = SecretUrl::new("amqp://guest:hunter2@127.0.0.1:5672/%2f");
        assert_eq!(url.to_string(), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "amqp://guest:hunter2@127.0.0.1:5672/%2f");
    }

    #[test]
    fn a_password_in_a_url_that_does_not_parse_is_hidden_too() {
        assert_eq!(redact("smtp://user:hunter2@/"), "smtp://user:***@/");
        assert_eq!(
            redact("postgres://app:s3cr@t@db host:5432/x"),
            "postgres://app:***@db host:5432/x"
        );
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn url_without_password_is_unchanged() {
        assert_eq!(
            redact("sqlite://data/gochat.db?mode=rwc"),
            "sqlite://data/gochat.db?mode=rwc"
        );
        assert_eq!(redact("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
    }
}

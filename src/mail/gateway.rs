//! What the MTA gateways (`gochat mailgate`, `gochat lmtp`) make of a received mail: the
//! `inbound-mail/v1` job and its deterministic id. One place, so a mail handed over by
//! either gateway becomes the same job, and an MTA that switches from the pipe to LMTP
//! (or delivers again after a confirm came too late) makes a duplicate, not a second mail.

use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The envelope an MTA hands over with the raw bytes.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `MAIL FROM`; `Some("")` for the null sender of a bounce (as Postfix's `${sender}`).
    pub sender: Option<&'a str>,
    /// `RCPT TO`, in order.
    pub recipients: &'a [String],
    /// The support mailbox, when it is not the first recipient.
    pub mailbox: Option<&'a str>,
}

/// The `inbound-mail/v1` payload for `raw`, received now.
pub fn payload(raw: &[u8], envelope: &Envelope<'_>) -> serde_json::Value {
    let mut payload = json!({
        "schema": "inbound-mail/v1",
        "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
        "recipients": envelope.recipients,
        "received_at": chrono::Utc::now().to_rfc3339(),
    });
    if let Some(s) = envelope.sender {
        payload["envelope_from"] = json!(s);
    }
    if let Some(m) = envelope.mailbox {
        payload["mailbox"] = json!(m);
    }
    payload
}

/// The job's `message_id`: the same mail to the same recipients gets the same id, so when
/// the MTA delivers again the second job is a duplicate of the first. The `mailgate-`
/// prefix is kept for LMTP too: ids already in `processed_jobs` must keep matching.
pub fn job_id(raw: &[u8], recipients: &[String]) -> String {
    let mut h = Sha256::new();
    for r in recipients {
        h.update(r.trim().to_ascii_lowercase().as_bytes());
        h.update(b"\0");
    }
    h.update(raw);
    let hex = hex::encode(&h.finalize()[..16]);
    format!("mailgate-{hex}")
}

/// The mailbox of a path, if it is one: `local@domain` (an obsolete source route
/// `@a,@b:` in front dropped), the local part plain or quoted, the domain a name or an
/// address literal.
pub fn address(path: &str) -> Option<&str> {
    let mailbox = match path.strip_prefix('@') {
        Some(route) => &route[route.find(':')? + 1..],
        None => path,
    };
    let at = mailbox.rfind('@')?;
    let (local, domain) = (&mailbox[..at], &mailbox[at + 1..]);
    let printable = |s: &str| s.chars().all(|c| !c.is_control() && c != ' ');
    let local_ok = if local.len() >= 2 && local.starts_with('"') && local.ends_with('"') {
        local.chars().all(|c| !c.is_control())
    } else {
        !local.is_empty() && printable(local) && !local.contains(['<', '>', '"', ',', '@'])
    };
    let domain_ok = if domain.starts_with('[') && domain.ends_with(']') {
        domain.len() > 2 && printable(domain)
    } else {
        !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
    };
    (local_ok && domain_ok && mailbox.len() <= 254).then_some(mailbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_mail_to_the_same_recipients_has_one_job_id() {
        let to = vec!["support@x.example".to_owned()];
        assert_eq!(
            job_id(b"mail", &to),
            job_id(b"mail", &["Support@X.example".into()])
        );
        assert_ne!(job_id(b"mail", &to), job_id(b"other", &to));
        assert_ne!(
            job_id(b"mail", &to),
            job_id(b"mail", &["sales@x.example".into()])
        );
    }

    #[test]
    fn the_payload_carries_the_envelope_and_the_mail_in_base64() {
        let to = vec!["support@x.example".to_owned()];
        let p = payload(
            b"Subject: hi\r\n\r\nbody\r\n",
            &Envelope {
                sender: Some(""),
                recipients: &to,
                mailbox: None,
            },
        );
        assert_eq!(p["schema"], "inbound-mail/v1");
        assert_eq!(p["recipients"], json!(["support@x.example"]));
        assert_eq!(p["envelope_from"], "");
        assert!(p.get("mailbox").is_none());
        assert_eq!(
            p["raw_base64"],
            base64::engine::general_purpose::STANDARD.encode(b"Subject: hi\r\n\r\nbody\r\n")
        );
        assert!(crate::jobs::check_payload("inbound-mail", &p).is_ok());
    }
}

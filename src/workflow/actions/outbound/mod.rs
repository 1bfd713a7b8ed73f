//! Outbound mail: `compose_message` (the recipient rule, the template or body, the stored
//! message) and `send_mail` (SMTP with at-most-once sending).

mod compose;
mod send;

pub use compose::ComposeMessage;
pub use send::SendMail;

use crate::mail::mime::MailAttachment;
use crate::workflow::actions::prelude::*;
use base64::Engine;
use gochat_entities::messages;
use gochat_entities::messages::OutboundKind;
use gochat_entities::messages::OutboundState;
use uuid::Uuid;

pub(in crate::workflow::actions) const MAIL_FACTS: &[FactSpec] = &[
    FactSpec {
        name: "mail.id",
        ty: FactType::Uuid,
        doc: "The outbound message's id.",
    },
    FactSpec {
        name: "mail.message_id",
        ty: FactType::Str,
        doc: "Its RFC 5322 Message-ID (without angle brackets).",
    },
    FactSpec {
        name: "mail.kind",
        ty: FactType::Enum(&["reply", "reminder", "notification"]),
        doc: "Why it is sent.",
    },
    FactSpec {
        name: "mail.sent",
        ty: FactType::Bool,
        doc: "The server accepted it.",
    },
    FactSpec {
        name: "mail.failed",
        ty: FactType::Bool,
        doc: "It failed for good.",
    },
    FactSpec {
        name: "mail.error",
        ty: FactType::Any,
        doc: "Why it failed, or null.",
    },
];

/// The `mail.*` facts of `m`.
pub(in crate::workflow::actions) fn mail_facts(facts: &mut Facts, m: &messages::Model) {
    facts.set("mail.id", json!(m.id));
    facts.set("mail.message_id", json!(m.message_id_header));
    facts.set(
        "mail.kind",
        json!(kind_name(m.kind.unwrap_or(OutboundKind::Reply))),
    );
    facts.set("mail.sent", json!(m.state == Some(OutboundState::Sent)));
    facts.set("mail.failed", json!(m.state == Some(OutboundState::Failed)));
    facts.set("mail.error", json!(m.error));
}

/// The composed message's id (`mail.id`).
pub(in crate::workflow::actions) fn mail_id(facts: &Facts) -> Result<Uuid, JobError> {
    facts
        .str("mail.id")
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| JobError::permanent("no composed message (mail.id)"))
}

pub(in crate::workflow::actions) fn kind_name(k: OutboundKind) -> &'static str {
    match k {
        OutboundKind::Reply => "reply",
        OutboundKind::Reminder => "reminder",
        OutboundKind::Notification => "notification",
    }
}

/// The job's attachments, decoded.
pub(in crate::workflow::actions) fn attachments(
    job: &Value,
) -> Result<Vec<MailAttachment>, JobError> {
    let Some(list) = job.get("attachments").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|a| {
            let name = a["name"].as_str().unwrap_or("attachment").to_owned();
            let content = base64::engine::general_purpose::STANDARD
                .decode(a["content_base64"].as_str().unwrap_or_default())
                .map_err(|e| {
                    JobError::permanent(format!("attachment {name:?}: not base64: {e}"))
                })?;
            Ok(MailAttachment {
                content_type: a["content_type"]
                    .as_str()
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                name,
                content,
            })
        })
        .collect()
}

//! The e2e load: a realistic mix of the job kinds, by the job's index `i`:
//!
//! | share | job |
//! | --- | --- |
//! | 40 % | `inbound-mail`: a corpus mail from a new sender (opens a thread, queues an acknowledgement) |
//! | 15 % | `inbound-mail`: a customer's reply to a pool thread (`In-Reply-To` its mail) |
//! | 15 % | `outbound-message`: an agent's reply to a pool thread (SMTP; starts the reminder ladder) |
//! | 15 % | `status-transition`: a pool thread to `waiting` or `open` |
//! | 15 % | `thread-update`: an internal comment on a pool thread |
//!
//! Reminders falling due come on top, from the seeded timers.

use base64::Engine;
use serde_json::json;

use super::seed::PoolThread;
use crate::bench::measure::BenchJob;

pub struct Mix<'a> {
    pub run: &'a str,
    pub pool: &'a [PoolThread],
    /// Corpus mails (normal ones, with a sender) to dress as customers' mail.
    pub mails: &'a [Vec<u8>],
}

impl Mix<'_> {
    /// Job `i` of the run; its id is `e2e-<run>-<i>`.
    pub fn job(&self, i: usize) -> BenchJob {
        let id = format!("e2e-{}-{i}", self.run);
        // Spread over the pool, so that hot threads are the exception.
        let t = &self.pool[(i.wrapping_mul(7919)) % self.pool.len()];
        let template = &self.mails[i % self.mails.len()];
        let (kind, body) = match i % 20 {
            0..=7 => {
                let head = format!(
                    "From: New Customer {i} <n{i}-{}@e2e.example>\r\nMessage-ID: <{id}@e2e.example>\r\n",
                    self.run
                );
                ("inbound-mail", inbound(head, template))
            }
            8..=10 => {
                let head = format!(
                    "From: <{}>\r\nMessage-ID: <{id}@e2e.example>\r\nIn-Reply-To: <{}>\r\n",
                    t.address, t.message_id
                );
                ("inbound-mail", inbound(head, template))
            }
            11..=13 => (
                "outbound-message",
                json!({"schema": "outbound-message/v1", "thread_id": t.id,
                       "author": {"kind": "agent", "id": "agent-1", "name": "Agent"},
                       "to": [t.address],
                       "body": {"subject": format!("Re: Printer on fire ({id})"), "text": "We are on it.\n"}}),
            ),
            14..=16 => (
                "status-transition",
                json!({"schema": "status-transition/v1", "thread_id": t.id,
                       "to": if (i / 20).is_multiple_of(2) { "waiting" } else { "open" },
                       "actor": {"kind": "agent", "id": "agent-1", "name": "Agent"}}),
            ),
            _ => (
                "thread-update",
                json!({"schema": "thread-update/v1", "thread_id": t.id,
                       "actor": {"kind": "agent", "id": "agent-1", "name": "Agent"},
                       "comment": format!("note {id}")}),
            ),
        };
        BenchJob {
            id,
            kind,
            body: body.to_string().into_bytes(),
        }
    }
}

/// An inbound-mail job: `head` (headers put first win) in front of a corpus mail.
fn inbound(head: String, template: &[u8]) -> serde_json::Value {
    let mut raw = head.into_bytes();
    raw.extend_from_slice(template);
    json!({"schema": "inbound-mail/v1",
           "raw_base64": base64::engine::general_purpose::STANDARD.encode(&raw),
           "recipients": ["support@gochat.example"]})
}

//! The load: a realistic mix of jobs per phase (on threads of that phase's own), and a
//! publisher that sends them through the own broker with confirms, retrying what was not
//! confirmed, as any at-least-once publisher does.

use std::time::Duration;

use base64::Engine;
use gochat::queue::Names;
use serde_json::json;
use uuid::Uuid;

use crate::cluster::FAST_LIFECYCLE;
use crate::common::broker::{Outgoing, publish_until_confirmed};
use crate::common::mail::TestMail;

/// Jobs of each kind per phase.
pub const COMMENTS: usize = 40;
pub const TRANSITIONS: usize = 20;
pub const REPLIES: usize = 20;
pub const INBOUND: usize = 20;
pub const LADDERS: usize = 8;
/// Pause between two publishes: the phase's jobs go out over about five seconds.
const PACE: Duration = Duration::from_millis(45);

/// What one job must have done, exactly once.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A `thread-update` comment with this body.
    Comment { body: String },
    /// A `status-transition` to `waiting`: one status change on the thread.
    Waiting { thread: Uuid },
    /// An agent's reply: one outbound message row, one mail at the sink.
    Reply,
    /// An inbound mail: one raw mail, one stored message, one acknowledgement to `sender`.
    Inbound { message_id: String, sender: String },
    /// `agent_replied` on a `fast` thread: reminder 1 and 2 each mailed once to `address`.
    Ladder { thread: Uuid, address: String },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub kind: &'static str,
    pub body: Vec<u8>,
    pub expect: Expect,
}

fn agent() -> serde_json::Value {
    json!({"kind": "agent", "id": "a1", "name": "Alice"})
}

/// Creates the phase's threads and returns its jobs, kinds interleaved.
pub async fn phase_jobs(store: &gochat::store::Store, phase: &str) -> Vec<Job> {
    let now = chrono::Utc::now();
    let mut by_kind: Vec<Vec<Job>> = Vec::new();

    let mut comments = Vec::new();
    let mut note_threads = Vec::new();
    for t in 0..4 {
        let address = format!("{phase}-notes{t}@acme.example");
        let (thread, _) =
            crate::common::fixtures::thread_with_contact(store, "default", &address, now).await;
        note_threads.push(thread);
    }
    for i in 0..COMMENTS {
        let body = format!("{phase} note {i}");
        comments.push(Job {
            id: format!("{phase}-note-{i}"),
            kind: "thread-update",
            body: json!({"schema": "thread-update/v1", "thread_id": note_threads[i % 4],
                         "actor": agent(), "comment": body})
            .to_string()
            .into_bytes(),
            expect: Expect::Comment { body },
        });
    }
    by_kind.push(comments);

    let mut transitions = Vec::new();
    for i in 0..TRANSITIONS {
        let address = format!("{phase}-park{i}@acme.example");
        let (thread, _) =
            crate::common::fixtures::thread_with_contact(store, "default", &address, now).await;
        transitions.push(Job {
            id: format!("{phase}-park-{i}"),
            kind: "status-transition",
            body: json!({"schema": "status-transition/v1", "thread_id": thread,
                         "actor": agent(), "to": "waiting", "reason": "parked"})
            .to_string()
            .into_bytes(),
            expect: Expect::Waiting { thread },
        });
    }
    by_kind.push(transitions);

    let mut replies = Vec::new();
    for i in 0..REPLIES {
        let address = format!("{phase}-reply{i}@acme.example");
        let (thread, _) =
            crate::common::fixtures::thread_with_contact(store, "default", &address, now).await;
        replies.push(Job {
            id: format!("{phase}-reply-{i}"),
            kind: "outbound-message",
            body: json!({"schema": "outbound-message/v1", "thread_id": thread,
                         "author": agent(), "to": [address],
                         "body": {"subject": format!("Re: case {phase} {i}"),
                                  "text": "We replaced the toner.\n"}})
            .to_string()
            .into_bytes(),
            expect: Expect::Reply,
        });
    }
    by_kind.push(replies);

    let mut inbound = Vec::new();
    for i in 0..INBOUND {
        let sender = format!("{phase}-cust{i}@customer{i}.example");
        let mail = TestMail::new(
            &format!("Customer {i} <{sender}>"),
            "support@gochat.example",
            &format!("Printer {i} on fire ({phase})"),
            "Hello,\n\nthe printer is on fire again.\n\nRegards\n",
        );
        let raw = base64::engine::general_purpose::STANDARD.encode(mail.bytes());
        inbound.push(Job {
            id: format!("{phase}-inbound-{i}"),
            kind: "inbound-mail",
            body: json!({"schema": "inbound-mail/v1", "raw_base64": raw,
                         "recipients": ["support@gochat.example"], "envelope_from": sender})
            .to_string()
            .into_bytes(),
            expect: Expect::Inbound {
                message_id: mail.id(),
                sender,
            },
        });
    }
    by_kind.push(inbound);

    let mut ladders = Vec::new();
    for i in 0..LADDERS {
        let address = format!("{phase}-ladder{i}@acme.example");
        let (thread, _) =
            crate::common::fixtures::thread_with_contact(store, FAST_LIFECYCLE, &address, now)
                .await;
        ladders.push(Job {
            id: format!("{phase}-ladder-{i}"),
            kind: "status-transition",
            body: json!({"schema": "status-transition/v1", "thread_id": thread,
                         "actor": agent(), "event": "agent_replied"})
            .to_string()
            .into_bytes(),
            expect: Expect::Ladder { thread, address },
        });
    }
    by_kind.push(ladders);

    // Round robin over the kinds, so every kind is in flight when the fault comes.
    let mut jobs = Vec::new();
    let mut iters: Vec<_> = by_kind.into_iter().map(|v| v.into_iter()).collect();
    loop {
        let before = jobs.len();
        for it in iters.iter_mut() {
            jobs.extend(it.next());
        }
        if jobs.len() == before {
            break;
        }
    }
    jobs
}

/// What the publisher did.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub jobs: usize,
    /// Publish attempts that failed (no connection, no confirm, a nack) and were retried.
    pub failed_attempts: usize,
}

/// Publishes every job until the broker confirms it, reconnecting as needed, paced.
pub async fn publish(url: String, names: Names, jobs: Vec<Job>) -> Published {
    let failed_attempts = publish_until_confirmed(
        &url,
        &names,
        jobs.iter()
            .map(|j| Outgoing {
                kind: j.kind,
                id: &j.id,
                body: &j.body,
            })
            .collect::<Vec<_>>(),
        PACE,
    )
    .await;
    Published {
        jobs: jobs.len(),
        failed_attempts,
    }
}

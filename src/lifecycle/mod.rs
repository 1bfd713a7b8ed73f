//! Thread lifecycles as data (`workflows/lifecycles/*.yaml`): the statuses and their inbox
//! colours, the transitions agents may make, the named events (`agent_replied`, ...), the
//! reminder ladder, the send window, the policy for replies to closed threads, and which
//! threads follow which lifecycle.
//!
//! - [`load`]: YAML → checked [`Lifecycle`], problems with file:line:column
//! - [`machine`]: the pure state machine the jobs and the simulator share
//! - [`window`]: send windows (cron + IANA time zone)
//! - [`simulate`]: the timeline a thread would follow

pub mod load;
pub mod machine;
pub mod simulate;
pub mod window;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gochat_entities::threads::ThreadStatus;
use serde_json::Value;

pub use machine::{Arm, Change, Fired, Illegal, Position};
pub use window::SendWindow;

/// One lifecycle, checked.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub name: String,
    pub file: PathBuf,
    /// Followed by threads no other lifecycle's selector picks.
    pub default: bool,
    pub selector: Selector,
    /// Display colour per status (`#rrggbb`).
    pub colours: BTreeMap<ThreadStatus, String>,
    /// Statuses an agent may set from each status (`status-transition` with `to`).
    pub transitions: BTreeMap<ThreadStatus, Vec<ThreadStatus>>,
    pub events: BTreeMap<String, EventRule>,
    pub ladder: Option<Ladder>,
    pub send_window: Option<SendWindow>,
    pub closed_reply: ClosedReply,
    /// Whether agents may still write to a closed thread (`closed_outbound: allow`);
    /// by default a message to a closed thread is refused.
    pub closed_outbound_allowed: bool,
    /// Template language when the contact has none.
    pub language: String,
}

/// Where a named event takes a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRule {
    pub to: EventTarget,
    /// Statuses the event applies from; from any other it is illegal.
    pub from: Vec<ThreadStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTarget {
    Status(ThreadStatus),
    /// The first step of the reminder ladder.
    Ladder,
}

/// The reminder ladder: entered in `status`, each step fires after its delay.
#[derive(Debug, Clone)]
pub struct Ladder {
    pub status: ThreadStatus,
    pub steps: Vec<LadderStep>,
    pub finally: Option<FinalStep>,
}

#[derive(Debug, Clone)]
pub struct LadderStep {
    pub after: Duration,
    /// Sent when the step fires (`workflows/templates/<name>/`).
    pub template: Option<String>,
    /// Held once the step fired, until the next one.
    pub status: ThreadStatus,
}

/// After the last step: a status change once the customer stayed silent this long.
#[derive(Debug, Clone)]
pub struct FinalStep {
    pub after: Duration,
    pub status: ThreadStatus,
}

/// What a customer's reply to a closed thread does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedReply {
    /// A new thread, linked to the closed one (the default: a closed case stays closed).
    NewThread,
    /// The closed thread opens again.
    Reopen,
}

/// Which threads follow a lifecycle. Every listed criterion must match; an empty selector
/// matches nothing (only the default lifecycle takes the rest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    /// The thread carries at least one of these tags.
    pub tags: Vec<String>,
    /// The thread came in on one of these addresses.
    pub mailboxes: Vec<String>,
    /// One of the thread's customers has all these attributes (exact values).
    pub customer: BTreeMap<String, Value>,
}

/// What a selector looks at.
#[derive(Debug, Clone, Default)]
pub struct ThreadTraits<'a> {
    pub tags: &'a [String],
    pub mailbox: Option<&'a str>,
    pub customer_attributes: &'a [Value],
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.mailboxes.is_empty() && self.customer.is_empty()
    }

    pub fn matches(&self, t: &ThreadTraits<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        let tags = self.tags.is_empty() || self.tags.iter().any(|x| t.tags.contains(x));
        let mailbox = self.mailboxes.is_empty()
            || t.mailbox.is_some_and(|m| {
                self.mailboxes
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(m.trim()))
            });
        let customer = self.customer.is_empty()
            || t.customer_attributes.iter().any(|attrs| {
                self.customer
                    .iter()
                    .all(|(k, v)| attrs.get(k).is_some_and(|a| a == v))
            });
        tags && mailbox && customer
    }
}

/// Every lifecycle in force, by name. Swapped whole with the workflows on reload.
#[derive(Debug, Clone, Default)]
pub struct Lifecycles {
    by_name: BTreeMap<String, Arc<Lifecycle>>,
}

impl Lifecycles {
    pub fn new(list: Vec<Lifecycle>) -> Self {
        Lifecycles {
            by_name: list
                .into_iter()
                .map(|l| (l.name.clone(), Arc::new(l)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Lifecycle>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    pub fn default_lifecycle(&self) -> Option<&Arc<Lifecycle>> {
        self.by_name.values().find(|l| l.default)
    }

    /// The lifecycle a new thread follows: the first (by name) whose selector matches,
    /// else the default.
    pub fn select(&self, traits: &ThreadTraits<'_>) -> Option<&Arc<Lifecycle>> {
        self.by_name
            .values()
            .find(|l| !l.default && l.selector.matches(traits))
            .or_else(|| self.default_lifecycle())
    }

    /// The thread's lifecycle; a thread whose lifecycle file was removed follows the
    /// default rather than failing every job about it.
    pub fn for_thread(&self, name: &str) -> Option<&Arc<Lifecycle>> {
        self.get(name).or_else(|| self.default_lifecycle())
    }

    /// Fills each card's status colour from its lifecycle (the store does not read
    /// lifecycle files).
    pub fn colour(&self, cards: &mut [crate::store::views::ThreadCard]) {
        for c in cards {
            c.status_colour = self
                .for_thread(&c.lifecycle)
                .zip(parse_status(&c.status))
                .and_then(|(l, s)| l.colours.get(&s).cloned());
        }
    }
}

/// Parses `3d`, `36h`, `90m`, `2d 12h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like `3d`, `36h` or `90m` ({e})"))
}

/// The status's name as lifecycle files spell it ([`ThreadStatus::as_str`]).
pub fn status_name(s: ThreadStatus) -> &'static str {
    s.as_str()
}

/// The status a lifecycle file names ([`ThreadStatus::from_name`]).
pub fn parse_status(s: &str) -> Option<ThreadStatus> {
    ThreadStatus::from_name(s)
}

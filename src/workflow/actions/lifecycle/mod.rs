//! The lifecycle actions: `transition` (an agent's status change or a named event, checked
//! against the thread's lifecycle) and `fire_timer` (a ladder step falling due). Both apply
//! the pure state machine's answer in the job's transaction: the thread's new status and
//! step, its earlier timers cancelled, the next timer armed.

mod fire_timer;
mod transition;

pub use fire_timer::FireTimer;
pub use transition::Transition;

use chrono::{DateTime, Utc};
use gochat_entities::threads::ThreadStatus;

use crate::contract::STATUSES;
use crate::lifecycle::status_name;
use crate::workflow::actions::prelude::*;

/// The facts both actions write (the `thread.*` facts are refreshed too, as
/// `load_thread` declared them); `fire_timer` adds the last.
pub(in crate::workflow::actions) const LIFECYCLE_FACTS: &[FactSpec] = &[
    FactSpec {
        name: "transition.from",
        ty: FactType::Enum(STATUSES),
        doc: "The status before.",
    },
    FactSpec {
        name: "transition.changed",
        ty: FactType::Bool,
        doc: "Whether the status changed.",
    },
    FactSpec {
        name: "transition.due_at",
        ty: FactType::Any,
        doc: "When the armed timer falls due (RFC 3339), or null.",
    },
    FactSpec {
        name: "reminder.template",
        ty: FactType::Any,
        doc: "The template of the reminder sent, or null for a silent step.",
    },
];

pub(in crate::workflow::actions) const TRANSITION_FACTS: &[FactSpec] =
    LIFECYCLE_FACTS.split_at(3).0;

/// The facts a transition from `from` to `to` leaves for the steps after it, in its
/// one-job and set forms: `transition.from`, `transition.changed` and `transition.due_at`
/// (null: no timer armed).
pub(in crate::workflow::actions) fn transition_facts(
    facts: &mut Facts,
    from: ThreadStatus,
    to: ThreadStatus,
    due_at: Option<DateTime<Utc>>,
) {
    facts.set("transition.from", json!(status_name(from)));
    facts.set("transition.changed", Value::Bool(to != from));
    facts.set(
        "transition.due_at",
        due_at.map_or(Value::Null, |d| json!(d.to_rfc3339())),
    );
}

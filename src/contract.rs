//! Names fixed by the public contract (`docs/queue-contract.md`): job kinds and statuses.
//!
//! Kept in one place because other Algoreg tools depend on these exact strings.

/// Every job kind, which is also its routing key and the suffix of its queue name.
pub const JOB_KINDS: &[&str] = &[
    "inbound-mail",
    "outbound-message",
    "status-transition",
    "delayed-reminder",
    "thread-update",
    "customer-upsert",
];

/// Thread statuses.
pub const STATUSES: &[&str] = &["open", "waiting", "reminder", "closed"];

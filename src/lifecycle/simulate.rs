//! `gochat workflows simulate`: the timeline a thread would follow under a lifecycle, given
//! what happens to it and when. It replays the same state machine the jobs use, on its own
//! clock, so ops can try a changed ladder or send window before deploying it.

use chrono::{DateTime, Utc};
use gochat_entities::threads::ThreadStatus;
use serde::Serialize;

use super::{Illegal, Lifecycle, parse_duration, parse_status, status_name};

/// Something that happens to the thread: a lifecycle event, or an agent setting a status
/// (written `status:<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub at: DateTime<Utc>,
    pub what: String,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub status: &'static str,
    /// `start`, an event's name, `set_status`, `reminder` (a reminder is sent) or `timer`
    /// (a silent step: only the status changes).
    pub action: String,
    pub template: Option<String>,
}

/// Parses `agent_replied@0,customer_replied@+4d,status:closed@2026-11-30T09:00:00Z`:
/// each event at an offset from `start` (`0`, `+4d`, `+36h`) or at an RFC 3339 time.
pub fn parse_events(spec: &str, start: DateTime<Utc>) -> Result<Vec<SimEvent>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (what, when) = part
            .rsplit_once('@')
            .ok_or_else(|| format!("{part:?}: write `<event>@<when>`, e.g. `agent_replied@0`"))?;
        let at = match when.trim() {
            "0" | "+0" => start,
            w if w.starts_with('+') => {
                let d = parse_duration(&w[1..])?;
                start + chrono::Duration::from_std(d).map_err(|e| format!("{w}: {e}"))?
            }
            w => DateTime::parse_from_rfc3339(w)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| {
                    format!("{part:?}: `{w}` is neither an offset like `+4d` nor an RFC 3339 time")
                })?,
        };
        out.push(SimEvent {
            at,
            what: what.trim().to_owned(),
        });
    }
    out.sort_by_key(|e| e.at);
    Ok(out)
}

/// The timeline of a thread that starts `open` at `start`, then lives through `events`.
pub fn simulate(
    l: &Lifecycle,
    start: DateTime<Utc>,
    events: &[SimEvent],
) -> Result<Vec<Entry>, Illegal> {
    let mut status = ThreadStatus::Open;
    // The armed timer: (due, step).
    let mut timer: Option<(DateTime<Utc>, i32)> = None;
    let mut out = vec![Entry {
        at: start,
        status: status_name(status),
        action: "start".into(),
        template: None,
    }];
    let mut pending = events.iter().peekable();
    // A ladder always ends; the cap only guards against a bug turning this into a hang.
    for _ in 0..10_000 {
        let next_event = pending.peek().map(|e| e.at);
        match (timer, next_event) {
            // The timer falls due first (or at the same moment: it was armed earlier).
            (Some((due, step)), ev) if ev.is_none_or(|t| due <= t) => {
                let fired = l.fire(step, due)?;
                status = fired.change.to.status;
                timer = fired.change.arm.map(|a| (a.due_at, a.step));
                out.push(Entry {
                    at: due,
                    status: status_name(status),
                    action: if fired.template.is_some() {
                        "reminder".into()
                    } else {
                        "timer".into()
                    },
                    template: fired.template,
                });
            }
            (_, Some(_)) => {
                let Some(ev) = pending.next() else { break };
                let (change, action) = match ev.what.strip_prefix("status:") {
                    Some(s) => {
                        let to = parse_status(s)
                            .ok_or_else(|| Illegal(format!("unknown status `{s}`")))?;
                        (l.set_status(status, to, ev.at)?, "set_status".to_owned())
                    }
                    None => (Some(l.event(status, &ev.what, ev.at)?), ev.what.clone()),
                };
                if let Some(change) = change {
                    status = change.to.status;
                    timer = change.arm.map(|a| (a.due_at, a.step));
                }
                out.push(Entry {
                    at: ev.at,
                    status: status_name(status),
                    action,
                    template: None,
                });
            }
            (None, None) => break,
            // Unreachable by the guard above; ends the loop rather than spinning.
            _ => break,
        }
    }
    Ok(out)
}

//! The lifecycle state machine, pure: given where a thread stands and what happened, where
//! it goes and which timer to arm. The jobs apply its answers in a transaction; the
//! simulator replays them on a clock of its own. No I/O here, so both agree by construction.

use chrono::{DateTime, Utc};
use gochat_entities::threads::ThreadStatus;

use super::{EventTarget, Lifecycle, status_name};

/// Where a thread stands: its status and, on the ladder, the step its timer will fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub status: ThreadStatus,
    pub step: Option<i32>,
}

/// A timer to schedule: fire ladder step `step` at `due_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm {
    pub step: i32,
    pub due_at: DateTime<Utc>,
}

/// The outcome of an event or status change: the new position and the timer to arm, if
/// any. The thread's earlier timers are always cancelled with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub to: Position,
    pub arm: Option<Arm>,
}

/// The outcome of a ladder timer firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The reminder to send, if the step sends one.
    pub template: Option<String>,
    pub change: Change,
}

/// A transition the lifecycle does not allow, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Illegal(pub String);

impl Lifecycle {
    /// An agent sets the status. Setting the ladder's status starts the ladder; any other
    /// status takes the thread off it. `Ok(None)`: already there, nothing to do.
    pub fn set_status(
        &self,
        from: ThreadStatus,
        to: ThreadStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, Illegal> {
        if from == to {
            return Ok(None);
        }
        let allowed = self.transitions.get(&from).cloned().unwrap_or_default();
        if !allowed.contains(&to) {
            let list: Vec<&str> = allowed.iter().map(|s| status_name(*s)).collect();
            return Err(Illegal(format!(
                "lifecycle `{}` does not allow {} → {} (from {} only to: {})",
                self.name,
                status_name(from),
                status_name(to),
                status_name(from),
                if list.is_empty() {
                    "nothing".to_owned()
                } else {
                    list.join(", ")
                }
            )));
        }
        Ok(Some(match &self.ladder {
            Some(l) if l.status == to => self.start_ladder(now),
            _ => Change {
                to: Position {
                    status: to,
                    step: None,
                },
                arm: None,
            },
        }))
    }

    /// A named event (`agent_replied`, `customer_replied`, ...).
    pub fn event(
        &self,
        from: ThreadStatus,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<Change, Illegal> {
        let Some(rule) = self.events.get(event) else {
            let known: Vec<&str> = self.events.keys().map(String::as_str).collect();
            return Err(Illegal(format!(
                "lifecycle `{}` has no event `{event}` (it has: {})",
                self.name,
                known.join(", ")
            )));
        };
        if !rule.from.contains(&from) {
            return Err(Illegal(format!(
                "lifecycle `{}`: event `{event}` does not apply to a {} thread",
                self.name,
                status_name(from)
            )));
        }
        Ok(match rule.to {
            EventTarget::Ladder => self.start_ladder(now),
            EventTarget::Status(s) => Change {
                to: Position {
                    status: s,
                    step: None,
                },
                arm: None,
            },
        })
    }

    /// Ladder step `step`'s timer fired (at its due time `base`): what to send, where the
    /// thread goes, and the next timer, counted from `base`.
    pub fn fire(&self, step: i32, base: DateTime<Utc>) -> Result<Fired, Illegal> {
        let Some(ladder) = &self.ladder else {
            return Err(Illegal(format!(
                "lifecycle `{}` has no reminder ladder",
                self.name
            )));
        };
        let n = ladder.steps.len() as i32;
        if (1..=n).contains(&step) {
            let s = &ladder.steps[(step - 1) as usize];
            let next = step + 1;
            let has_next = next <= n || ladder.finally.is_some();
            Ok(Fired {
                template: s.template.clone(),
                change: Change {
                    to: Position {
                        status: s.status,
                        step: has_next.then_some(next),
                    },
                    arm: has_next.then(|| Arm {
                        step: next,
                        due_at: self.due(next, base),
                    }),
                },
            })
        } else if step == n + 1
            && let Some(f) = &ladder.finally
        {
            Ok(Fired {
                template: None,
                change: Change {
                    to: Position {
                        status: f.status,
                        step: None,
                    },
                    arm: None,
                },
            })
        } else {
            Err(Illegal(format!(
                "lifecycle `{}` has no ladder step {step}",
                self.name
            )))
        }
    }

    fn start_ladder(&self, now: DateTime<Utc>) -> Change {
        match &self.ladder {
            Some(l) if !l.steps.is_empty() || l.finally.is_some() => Change {
                to: Position {
                    status: l.status,
                    step: Some(1),
                },
                arm: Some(Arm {
                    step: 1,
                    due_at: self.due(1, now),
                }),
            },
            Some(l) => Change {
                to: Position {
                    status: l.status,
                    step: None,
                },
                arm: None,
            },
            None => Change {
                to: Position {
                    status: ThreadStatus::Waiting,
                    step: None,
                },
                arm: None,
            },
        }
    }

    /// When step `step` falls due if counted from `base`: after its delay, and for a step
    /// that sends a reminder, inside the send window.
    pub fn due(&self, step: i32, base: DateTime<Utc>) -> DateTime<Utc> {
        let Some(ladder) = &self.ladder else {
            return base;
        };
        let n = ladder.steps.len() as i32;
        let (after, sends) = if (1..=n).contains(&step) {
            let s = &ladder.steps[(step - 1) as usize];
            (s.after, s.template.is_some())
        } else if let Some(f) = &ladder.finally {
            (f.after, false)
        } else {
            return base;
        };
        let t = chrono::Duration::from_std(after)
            .ok()
            .and_then(|d| base.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        match (&self.send_window, sends) {
            (Some(w), true) => w.next_open(t),
            _ => t,
        }
    }
}

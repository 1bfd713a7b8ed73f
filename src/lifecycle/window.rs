//! Send windows: the minutes in which reminders may go out, as a cron expression in an IANA
//! time zone. A reminder falling due outside the window is due when it next opens.

use std::str::FromStr;

use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use cron::Schedule;

#[derive(Debug, Clone)]
pub struct SendWindow {
    /// As written in the file (5 fields: minute hour day-of-month month day-of-week).
    pub cron: String,
    pub timezone: Tz,
    schedule: Schedule,
}

impl SendWindow {
    /// `cron` has five fields (`* 9-17 * * Mon-Fri`: every minute from 09:00 to 17:59 on
    /// weekdays) or six with seconds first; `timezone` is an IANA name (`Europe/Berlin`).
    pub fn new(cron: &str, timezone: &str) -> Result<SendWindow, WindowError> {
        let fields = cron.split_whitespace().count();
        let expr = match fields {
            5 => format!("0 {cron}"),
            6 | 7 => cron.to_owned(),
            n => {
                return Err(WindowError::Cron(format!(
                    "{cron:?} has {n} fields; write five: minute hour day-of-month month day-of-week"
                )));
            }
        };
        let schedule =
            Schedule::from_str(&expr).map_err(|e| WindowError::Cron(format!("{cron:?}: {e}")))?;
        let timezone = Tz::from_str(timezone.trim())
            .map_err(|_| WindowError::TimeZone(timezone.to_owned()))?;
        // A schedule that never fires would hold every reminder forever.
        if schedule.upcoming(timezone).next().is_none() {
            return Err(WindowError::Cron(format!("{cron:?} never opens")));
        }
        Ok(SendWindow {
            cron: cron.to_owned(),
            timezone,
            schedule,
        })
    }

    /// Whether the minute holding `t` is inside the window.
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        let minute = t.duration_trunc(Duration::minutes(1)).unwrap_or(t);
        self.schedule.includes(minute.with_timezone(&self.timezone))
    }

    /// `t` if the window is open then, else the moment it next opens.
    pub fn next_open(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        if self.is_open(t) {
            return t;
        }
        self.schedule
            .after(&t.with_timezone(&self.timezone))
            .next()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(t)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("bad cron expression {0}")]
    Cron(String),
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn business_hours_in_berlin() {
        let w = SendWindow::new("* 9-16 * * Mon-Fri", "Europe/Berlin").unwrap();
        // Tuesday 10:00 Berlin (CET, UTC+1) is open.
        assert!(w.is_open(at("2026-11-24T09:00:00Z")));
        assert_eq!(
            w.next_open(at("2026-11-24T09:30:15Z")),
            at("2026-11-24T09:30:15Z")
        );
        // Tuesday 17:30 Berlin is closed: next is Wednesday 09:00 Berlin = 08:00 UTC.
        assert_eq!(
            w.next_open(at("2026-11-24T16:30:00Z")),
            at("2026-11-25T08:00:00Z")
        );
        // Saturday → Monday 09:00.
        assert_eq!(
            w.next_open(at("2026-11-28T12:00:00Z")),
            at("2026-11-30T08:00:00Z")
        );
        // Summer time: 09:00 Berlin is 07:00 UTC.
        assert_eq!(
            w.next_open(at("2026-07-04T12:00:00Z")),
            at("2026-07-06T07:00:00Z")
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused() {
        assert!(matches!(
            SendWindow::new("* 25 * * *", "UTC"),
            Err(WindowError::Cron(_))
        ));
        assert!(matches!(
            SendWindow::new("* 9", "UTC"),
            Err(WindowError::Cron(_))
        ));
        assert_eq!(
            SendWindow::new("* 9-17 * * *", "Europe/Berln").unwrap_err(),
            WindowError::TimeZone("Europe/Berln".into())
        );
    }
}

//! Opaque page cursors: the sort key of the last item of a page, so the next page starts
//! strictly after it (keyset pagination). Unlike an offset, an item inserted at the top
//! while a client pages neither repeats an item nor skips one further down.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A position in a list ordered by (time, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        // Nanoseconds: SQLite keeps the clock's full precision, and a cursor rounded to
        // microseconds would not sort where its item does.
        URL_SAFE_NO_PAD.encode(format!(
            "1|{}|{}|{}",
            self.at.timestamp(),
            self.at.timestamp_subsec_nanos(),
            self.id.simple()
        ))
    }

    /// `None` for anything this server did not hand out.
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() > 200 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut parts = text.split('|');
        if parts.next()? != "1" {
            return None;
        }
        let secs = parts.next()?.parse().ok()?;
        let at = DateTime::from_timestamp(secs, parts.next()?.parse().ok()?)?;
        let id = Uuid::try_parse(parts.next()?).ok()?;
        parts.next().is_none().then_some(Cursor { at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let c = Cursor {
            at: DateTime::from_timestamp(1_765_000_000, 123_456_789).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "x", "MXx4fHk", "'; DROP TABLE threads; --"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}

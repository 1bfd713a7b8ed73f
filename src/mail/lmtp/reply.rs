//! LMTP replies: a code and one or more lines of text, each line after the first code but
//! the last written `code-text`, the last `code text` (RFC 5321 4.2). Every 2xx, 4xx and 5xx
//! reply but the greeting and LHLO's carries an enhanced status code (RFC 2034, RFC 3463), so
//! the MTA logs say which of the recipient, the message or the system was at fault.

use std::borrow::Cow;
use std::fmt;

/// One reply, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply with an enhanced status code, e.g. `(250, "2.1.0", "Ok")`.
    pub fn new(code: u16, status: &str, text: impl fmt::Display) -> Reply {
        Reply {
            code,
            lines: vec![Cow::Owned(format!("{status} {text}"))],
        }
    }

    /// A reply without an enhanced status code (the greeting, LHLO, `354`).
    pub fn plain(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply { code, lines }
    }

    /// 2xx: done.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The text of every line, without codes (for tests and logs).
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Appends the reply as it goes on the wire.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Never a line break of our own inside a line: it would desynchronise the MTA.
            let line: String = line.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_continue_with_a_dash_and_end_with_a_space() {
        let r = Reply::plain(250, vec!["x.example".into(), "PIPELINING".into()]);
        assert_eq!(r.to_string(), "250-x.example\r\n250 PIPELINING\r\n");
        assert_eq!(
            Reply::new(250, "2.0.0", "Ok").to_string(),
            "250 2.0.0 Ok\r\n"
        );
        assert_eq!(
            Reply::new(501, "5.1.3", "bad\r\naddress").to_string(),
            "501 5.1.3 badaddress\r\n"
        );
    }
}

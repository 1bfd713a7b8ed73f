//! The message after `DATA`: lines end with CRLF, a line starting with `.` had a dot
//! added by the client (removed here), and a line of a single `.` ends the message.
//!
//! Only `CRLF . CRLF` ends it: a bare LF or CR is message content, kept as it came, and a
//! dot after one is no line start. Ending on `LF . LF` too is what made SMTP smuggling
//! possible (one server's end of message in the middle of another's).
//!
//! Past `max` bytes the rest is only scanned for the end, never kept, so an oversized
//! message costs no memory.

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line.
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line: LF next ends the message.
    DotCr,
    /// Inside a line.
    Middle,
    /// A CR inside a line, not yet written (LF next makes a line end).
    Cr,
}

/// Decodes one message, fed in chunks as they arrive.
#[derive(Debug)]
pub struct DataDecoder {
    at: At,
    body: Vec<u8>,
    max: u64,
    /// Set once the message went past `max`; `body` stops growing.
    oversized: bool,
}

/// A message that ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Message(Vec<u8>),
    /// Over the limit; its bytes were dropped.
    TooLarge,
}

impl DataDecoder {
    /// `expected`: the client's `SIZE=` announcement, to size the buffer once.
    pub fn new(max: u64, expected: Option<u64>) -> DataDecoder {
        let reserve = expected.unwrap_or(0).min(max).min(64 << 20);
        DataDecoder {
            at: At::LineStart,
            body: Vec::with_capacity(usize::try_from(reserve).unwrap_or(0)),
            max,
            oversized: false,
        }
    }

    /// Reads from `input`; returns how many bytes it consumed and, when the message ended
    /// within them, the message (the bytes after the end are the next command's).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Decoded>) {
        let mut i = 0;
        while i < input.len() {
            if self.at == At::Middle {
                // The common case: copy up to the next CR at once.
                let run = input[i..]
                    .iter()
                    .position(|b| *b == b'\r')
                    .unwrap_or(input.len() - i);
                self.emit(&input[i..i + run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            self.at = match (self.at, b) {
                (At::LineStart, b'.') => At::Dot,
                (At::LineStart | At::Middle, b'\r') => At::Cr,
                (At::LineStart, _) => {
                    self.emit(&[b]);
                    At::Middle
                }
                (At::Dot, b'\r') => At::DotCr,
                // A stuffed dot: dropped (RFC 5321 4.5.2).
                (At::Dot, _) => {
                    self.emit(&[b]);
                    At::Middle
                }
                (At::DotCr, b'\n') => {
                    let decoded = if self.oversized {
                        Decoded::TooLarge
                    } else {
                        Decoded::Message(std::mem::take(&mut self.body))
                    };
                    return (i, Some(decoded));
                }
                // `.` CR then anything else: the dot was stuffed, the CR is content.
                (At::DotCr, b'\r') => {
                    self.emit(b"\r");
                    At::Cr
                }
                (At::DotCr, _) => {
                    self.emit(&[b'\r', b]);
                    At::Middle
                }
                (At::Cr, b'\n') => {
                    self.emit(b"\r\n");
                    At::LineStart
                }
                (At::Cr, b'\r') => {
                    self.emit(b"\r");
                    At::Cr
                }
                (At::Cr, _) => {
                    self.emit(&[b'\r', b]);
                    At::Middle
                }
                (At::Middle, _) => {
                    self.emit(&[b]);
                    At::Middle
                }
            };
        }
        (input.len(), None)
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.oversized || bytes.is_empty() {
            return;
        }
        if (self.body.len() + bytes.len()) as u64 > self.max {
            self.oversized = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `step` bytes; the message and the bytes left after it.
    fn decode(input: &[u8], max: u64, step: usize) -> (Option<Decoded>, Vec<u8>) {
        let mut d = DataDecoder::new(max, None);
        let mut at = 0;
        while at < input.len() {
            let end = (at + step).min(input.len());
            let (used, done) = d.feed(&input[at..end]);
            at += used;
            if done.is_some() {
                return (done, input[at..].to_vec());
            }
        }
        (None, Vec::new())
    }

    fn message(input: &[u8]) -> Vec<u8> {
        for step in [1, 2, 3, 7, 4096] {
            let (m, _) = decode(input, 1 << 20, step);
            let first = decode(input, 1 << 20, 4096).0;
            assert_eq!(m, first, "chunking by {step} changes the result");
        }
        match decode(input, 1 << 20, 4096).0 {
            Some(Decoded::Message(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dots_are_unstuffed_and_a_lone_dot_ends_the_message() {
        assert_eq!(message(b"a\r\n..b\r\n.\r\n"), b"a\r\n.b\r\n");
        assert_eq!(message(b"...\r\n.x\r\n.\r\n"), b"..\r\nx\r\n");
        assert_eq!(message(b".\r\n"), b"");
        let (m, rest) = decode(b"x\r\n.\r\nQUIT\r\n", 100, 5);
        assert_eq!(m, Some(Decoded::Message(b"x\r\n".to_vec())));
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn bare_line_feeds_and_carriage_returns_are_content_and_end_nothing() {
        assert_eq!(message(b"a\n.\nb\r\n.\r\n"), b"a\n.\nb\r\n");
        assert_eq!(message(b"a\r.\r\nb\r\n.\r\n"), b"a\r.\r\nb\r\n");
        assert_eq!(message(b"a\r\r\n.\rb\r\n.\r\n"), b"a\r\r\n\rb\r\n");
        assert_eq!(message(b"a\r\n.\r\r\n.\r\n"), b"a\r\n\r\r\n");
        assert_eq!(decode(b"a\n.\n", 100, 1).0, None, "not the end");
    }

    #[test]
    fn over_the_limit_the_rest_is_read_but_not_kept() {
        let mut big = vec![b'a'; 5000];
        big.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        let (m, rest) = decode(&big, 1000, 300);
        assert_eq!(m, Some(Decoded::TooLarge));
        assert_eq!(rest, b"NOOP\r\n");
        let mut d = DataDecoder::new(10, None);
        d.feed(&[b'x'; 4000]);
        assert_eq!(d.body.capacity(), 0, "nothing kept past the limit");
        // At the limit exactly: kept.
        assert_eq!(
            decode(b"12345678\r\n.\r\n", 10, 3).0,
            Some(Decoded::Message(b"12345678\r\n".to_vec()))
        );
    }
}

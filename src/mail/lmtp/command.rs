//! Parsing one LMTP command line (without its line ending) into a [`Command`]: verbs are
//! case-insensitive, paths are `<...>` (or, leniently, a bare address), and the only
//! parameters are those we advertise (`SIZE`, `BODY` on MAIL; none on RCPT).

use super::reply::Reply;
use crate::mail::gateway::address;

/// The commands we serve. Anything else is [`CommandError::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `LHLO <client name>`.
    Lhlo,
    /// `MAIL FROM:<path> [SIZE=n] [BODY=...]`; an empty sender is the null sender (`<>`).
    Mail {
        sender: String,
        size: Option<u64>,
    },
    /// `RCPT TO:<address>`.
    Rcpt {
        recipient: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
}

/// Why a line is not a command we can run; each has its reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command unrecognized")]
    Unknown,
    #[error("syntax: {0}")]
    Syntax(&'static str),
    #[error("bad sender address syntax")]
    BadSender,
    #[error("bad recipient address syntax")]
    BadRecipient,
    #[error("parameter not supported")]
    Parameter,
}

impl CommandError {
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::new(500, "5.5.1", "Command unrecognized"),
            CommandError::Syntax(usage) => Reply::new(501, "5.5.4", format!("Syntax: {usage}")),
            CommandError::BadSender => Reply::new(501, "5.1.7", "Bad sender address syntax"),
            CommandError::BadRecipient => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
            CommandError::Parameter => Reply::new(555, "5.5.4", "Parameter not supported"),
        }
    }
}

/// Parses one command line.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    // Commands are ASCII; anything else cannot be one of ours.
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Unknown)?;
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_start()),
        None => (line, ""),
    };
    let bare = |cmd: Command, usage: &'static str| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(usage))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "LHLO" if rest.is_empty() => Err(CommandError::Syntax("LHLO <hostname>")),
        "LHLO" => Ok(Command::Lhlo),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => bare(Command::Data, "DATA"),
        "RSET" => bare(Command::Rset, "RSET"),
        // NOOP may carry a string, which is ignored (RFC 5321 4.1.1.9).
        "NOOP" => Ok(Command::Noop),
        "QUIT" => bare(Command::Quit, "QUIT"),
        "VRFY" if rest.is_empty() => Err(CommandError::Syntax("VRFY <address>")),
        "VRFY" => Ok(Command::Vrfy),
        _ => Err(CommandError::Unknown),
    }
}

fn mail(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]";
    let rest = keyword(rest, "FROM:").ok_or(CommandError::Syntax(USAGE))?;
    let (path, params) = path(rest).ok_or(CommandError::Syntax(USAGE))?;
    let sender = if path.is_empty() {
        String::new()
    } else {
        address(path).ok_or(CommandError::BadSender)?.to_owned()
    };
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => size = Some(value.parse().map_err(|_| CommandError::Syntax(USAGE))?),
            "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
            _ => return Err(CommandError::Parameter),
        }
    }
    Ok(Command::Mail { sender, size })
}

fn rcpt(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "RCPT TO:<address>";
    let rest = keyword(rest, "TO:").ok_or(CommandError::Syntax(USAGE))?;
    let (path, params) = path(rest).ok_or(CommandError::Syntax(USAGE))?;
    if !params.trim().is_empty() {
        return Err(CommandError::Parameter);
    }
    let recipient = address(path).ok_or(CommandError::BadRecipient)?;
    Ok(Command::Rcpt {
        recipient: recipient.to_owned(),
    })
}

/// `rest` after a case-insensitive `word` (such as `FROM:`), with spaces after it skipped.
fn keyword<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let head = rest.get(..word.len())?;
    head.eq_ignore_ascii_case(word)
        .then(|| rest[word.len()..].trim_start())
}

/// Splits `<path> params` into the path's content and the parameters. A `>` inside a
/// quoted local part does not end the path.
fn path(s: &str) -> Option<(&str, &str)> {
    let Some(inner) = s.strip_prefix('<') else {
        // Lenient: a bare address, as some clients send.
        let end = s.find(' ').unwrap_or(s.len());
        return (end > 0).then(|| (&s[..end], &s[end..]));
    };
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some((&inner[..i], &inner[i + 1..])),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, CommandError> {
        parse(line.as_bytes())
    }

    #[test]
    fn verbs_are_case_insensitive_and_paths_may_be_spaced() {
        assert_eq!(p("lhlo mta.example"), Ok(Command::Lhlo));
        assert_eq!(
            p("mail from: <Ada@Acme.example> SIZE=1200 BODY=8BITMIME"),
            Ok(Command::Mail {
                sender: "Ada@Acme.example".into(),
                size: Some(1200)
            })
        );
        assert_eq!(
            p("MAIL FROM:<>"),
            Ok(Command::Mail {
                sender: String::new(),
                size: None
            })
        );
        assert_eq!(
            p("RCPT TO:<@relay.example:support@help.example>"),
            Ok(Command::Rcpt {
                recipient: "support@help.example".into()
            })
        );
        assert_eq!(
            p("RCPT TO:<\"odd > name\"@help.example>"),
            Ok(Command::Rcpt {
                recipient: "\"odd > name\"@help.example".into()
            })
        );
        assert_eq!(p("NOOP anything"), Ok(Command::Noop));
        assert_eq!(p("data"), Ok(Command::Data));
        assert_eq!(p("VRFY support"), Ok(Command::Vrfy));
    }

    #[test]
    fn what_is_not_a_command_of_ours_says_why() {
        assert_eq!(p("EHLO mta.example"), Err(CommandError::Unknown));
        assert_eq!(p("STARTTLS"), Err(CommandError::Unknown));
        assert_eq!(parse(b"\xff\xfe"), Err(CommandError::Unknown));
        assert!(matches!(p("LHLO"), Err(CommandError::Syntax(_))));
        assert!(matches!(
            p("MAIL <a@b.example>"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.example"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.example> SIZE=big"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(p("DATA now"), Err(CommandError::Syntax(_))));
        assert_eq!(
            p("MAIL FROM:<a@b.example> RET=FULL"),
            Err(CommandError::Parameter)
        );
        assert_eq!(
            p("RCPT TO:<a@b.example> NOTIFY=NEVER"),
            Err(CommandError::Parameter)
        );
        assert_eq!(
            p("MAIL FROM:<not an address>"),
            Err(CommandError::BadSender)
        );
        for bad in [
            "<>",
            "<support>",
            "<@help.example>",
            "<a@>",
            "<a@b..example>",
            "<a b@c.example>",
        ] {
            assert_eq!(
                p(&format!("RCPT TO:{bad}")),
                Err(CommandError::BadRecipient),
                "{bad}"
            );
        }
        assert_eq!(p("RCPT TO:<a@[127.0.0.1]>").map(|_| ()), Ok(()));
    }
}

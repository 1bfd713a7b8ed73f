//! Whether a mail's From can be believed, from the `Authentication-Results` header (RFC 8601)
//! that the MTA we trust adds. Without it a forged `From:` of a known contact (plus a token
//! from an old acknowledgement) was taken as that customer.
//!
//! Only the header whose authserv-id is ours (`mail.authserv_id`) counts: anyone can write
//! an `Authentication-Results` header into a mail, and a trusted MTA adds its own on top
//! (RFC 8601 §5 asks it to remove forged copies of its own). No header of ours, or no
//! `authserv_id` configured: nothing is known, and the mail is handled as before.

use crate::mail::parse::ParsedMail;

/// What our MTA found about the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// DMARC passed, or (without a DMARC result) SPF or DKIM did.
    Pass,
    /// DMARC failed, or (without a DMARC result) SPF or DKIM failed and neither passed: the
    /// From is not the sender's to use. Names the results, e.g. `dmarc=fail`.
    Fail(String),
    /// No result of ours, or only neutral ones (`none`, `neutral`, `temperror`...).
    Unknown,
}

impl Verdict {
    /// The fact value: `pass`, `fail` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Unknown => "unknown",
        }
    }
}

/// The verdict of the topmost `Authentication-Results` header of `authserv_id`.
pub fn verdict(mail: &ParsedMail, authserv_id: Option<&str>) -> Verdict {
    let Some(ours) = authserv_id.map(str::trim).filter(|s| !s.is_empty()) else {
        return Verdict::Unknown;
    };
    let Some(results) = mail
        .headers_named("Authentication-Results")
        .find(|v| authserv(v).is_some_and(|id| id.eq_ignore_ascii_case(ours)))
    else {
        return Verdict::Unknown;
    };
    let found = method_results(results);
    let result = |method: &str| {
        found
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
    };
    let (dmarc, spf, dkim) = (result("dmarc"), result("spf"), result("dkim"));
    let has = |rs: &[&str], want: &[&str]| rs.iter().any(|r| want.contains(r));
    if has(&dmarc, &["pass"]) {
        return Verdict::Pass;
    }
    if has(&dmarc, &["fail"]) {
        return Verdict::Fail("dmarc=fail".into());
    }
    if has(&spf, &["pass"]) || has(&dkim, &["pass"]) {
        return Verdict::Pass;
    }
    let failed: Vec<String> = [("spf", &spf), ("dkim", &dkim)]
        .iter()
        .filter(|(_, rs)| has(rs, &["fail", "softfail", "permerror"]))
        .map(|(m, rs)| format!("{m}={}", rs.first().copied().unwrap_or_default()))
        .collect();
    if failed.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Fail(failed.join(" "))
    }
}

/// The authserv-id of a header value: what stands before the first `;`, without a version
/// number or comments.
fn authserv(value: &str) -> Option<&str> {
    let head = value.split(';').next()?;
    let head = uncomment(head);
    head.split_whitespace().next()
}

/// `head` up to its first comment.
fn uncomment(head: &str) -> &str {
    head.split('(').next().unwrap_or(head)
}

/// Each `method=result` of a header value (methods and results lower case), in order.
fn method_results(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .skip(1)
        .filter_map(|resinfo| {
            let first = uncomment(resinfo).split_whitespace().next()?;
            let (method, result) = first.split_once('=')?;
            // `dkim/1=pass`: a method version.
            let method = method.split('/').next()?.trim().to_ascii_lowercase();
            Some((method, result.trim().to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse::parse;

    fn with(headers: &str) -> ParsedMail {
        parse(format!("From: ann@acme.example\n{headers}\nSubject: Hi\n\nx\n").as_bytes()).unwrap()
    }

    const MX: Option<&str> = Some("mx.help.example");

    #[test]
    fn our_mtas_results_decide() {
        let pass = with(
            "Authentication-Results: mx.help.example;\n dkim=pass header.d=acme.example;\n spf=pass smtp.mailfrom=acme.example;\n dmarc=pass header.from=acme.example",
        );
        assert_eq!(verdict(&pass, MX), Verdict::Pass);
        let spoofed = with(
            "Authentication-Results: mx.help.example 1; spf=fail smtp.mailfrom=acme.example; dkim=none; dmarc=fail (p=reject) header.from=acme.example",
        );
        assert_eq!(verdict(&spoofed, MX), Verdict::Fail("dmarc=fail".into()));
        let spf_only =
            with("Authentication-Results: MX.help.example; spf=softfail smtp.mailfrom=x");
        assert_eq!(verdict(&spf_only, MX), Verdict::Fail("spf=softfail".into()));
        let dkim_saves = with("Authentication-Results: mx.help.example; spf=fail; dkim/1=pass");
        assert_eq!(verdict(&dkim_saves, MX), Verdict::Pass);
        let neutral = with("Authentication-Results: mx.help.example; spf=none; dkim=temperror");
        assert_eq!(verdict(&neutral, MX), Verdict::Unknown);
        assert_eq!(
            verdict(&with("Authentication-Results: mx.help.example; none"), MX),
            Verdict::Unknown
        );
    }

    #[test]
    fn only_our_header_counts_and_only_when_configured() {
        // The sender wrote a passing header of its own; our MTA's, on top, says fail.
        let forged = with(
            "Authentication-Results: mx.help.example; dmarc=fail header.from=acme.example\nAuthentication-Results: evil.example; dmarc=pass",
        );
        assert_eq!(verdict(&forged, MX), Verdict::Fail("dmarc=fail".into()));
        let theirs_only = with("Authentication-Results: evil.example; dmarc=pass");
        assert_eq!(verdict(&theirs_only, MX), Verdict::Unknown);
        let spoofed = with("Authentication-Results: mx.help.example; dmarc=fail");
        assert_eq!(verdict(&spoofed, None), Verdict::Unknown, "not configured");
        assert_eq!(verdict(&with("X-Other: 1"), MX), Verdict::Unknown);
    }
}

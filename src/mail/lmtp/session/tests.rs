//! The session driven as the server drives it, with scripts of what an MTA sends.

use super::*;

const LIMITS: fn() -> Limits = || Limits {
    max_size: 1000,
    hostname: "lmtp.test".into(),
};

/// What the server would write for `input` arriving in chunks of `step` bytes, and the
/// mails it would hand over (each recipient's job "confirmed" as `job-<n>`).
fn converse(input: &[u8], step: usize) -> (String, Vec<Mail>) {
    let mut session = Session::new(LIMITS());
    let mut out = Vec::new();
    session.greeting().write_to(&mut out);
    let (mut buf, mut mails) = (Vec::new(), Vec::new());
    for chunk in input.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(event) = session.next(&mut buf) {
            match event {
                Event::Reply(r) => r.write_to(&mut out),
                Event::Close(r) => {
                    r.write_to(&mut out);
                    return (String::from_utf8_lossy(&out).into_owned(), mails);
                }
                Event::Deliver(mail) => {
                    for r in &mail.recipients {
                        let outcome: Result<String, String> = Ok(format!("job-{}", mails.len()));
                        recipient_reply(r, &outcome).write_to(&mut out);
                    }
                    mails.push(mail);
                }
            }
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), mails)
}

/// The reply codes written, in order.
fn codes(out: &str) -> Vec<&str> {
    out.lines().map(|l| &l[..3]).collect()
}

/// The same conversation fed at once and byte by byte must read the same.
fn both_ways(input: &[u8]) -> (String, Vec<Mail>) {
    let whole = converse(input, input.len().max(1));
    assert_eq!(converse(input, 1), whole, "byte by byte differs");
    assert_eq!(converse(input, 7), whole, "in chunks of 7 differs");
    whole
}

#[test]
fn a_pipelined_transaction_gets_one_reply_per_recipient_in_order() {
    let (out, mails) = both_ways(
        b"LHLO mta.example\r\n\
          MAIL FROM:<ada@acme.example> SIZE=40\r\n\
          RCPT TO:<support@help.example>\r\n\
          RCPT TO:<sales@help.example>\r\n\
          DATA\r\n\
          Subject: hi\r\n\r\nHello\r\n.\r\n\
          QUIT\r\n",
    );
    assert_eq!(
        out,
        "220 lmtp.test LMTP Go!Chat ready\r\n\
         250-lmtp.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n\
         250 SIZE 1000\r\n\
         250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
         354 Start mail input; end with <CRLF>.<CRLF>\r\n\
         250 2.0.0 <support@help.example> queued as job-0\r\n\
         250 2.0.0 <sales@help.example> queued as job-0\r\n\
         221 2.0.0 Bye\r\n"
    );
    assert_eq!(
        mails,
        vec![Mail {
            sender: "ada@acme.example".into(),
            recipients: vec!["support@help.example".into(), "sales@help.example".into()],
            raw: b"Subject: hi\r\n\r\nHello\r\n".to_vec(),
        }]
    );
}

#[test]
fn the_message_is_dot_unstuffed_and_a_session_takes_several_transactions() {
    let (out, mails) = both_ways(
        b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@h.example>\r\nDATA\r\n\
          ..leading dot\r\n.\r\n\
          MAIL FROM:<b@x.example>\r\nRCPT TO:<a@h.example>\r\nDATA\r\nsecond\r\n.\r\n",
    );
    assert_eq!(mails.len(), 2, "{out}");
    assert_eq!(mails[0].sender, "", "the null sender");
    assert_eq!(mails[0].raw, b".leading dot\r\n");
    assert_eq!(mails[1].raw, b"second\r\n");
    assert!(
        out.ends_with("250 2.0.0 <a@h.example> queued as job-1\r\n"),
        "{out}"
    );
}

#[test]
fn bare_line_feeds_end_commands_but_not_the_message() {
    let (out, mails) = both_ways(
        b"LHLO x\nMAIL FROM:<a@x.example>\nRCPT TO:<s@h.example>\nDATA\n\
          line\n.\nstill the message\r\n.\r\nNOOP\n",
    );
    assert_eq!(mails[0].raw, b"line\n.\nstill the message\r\n");
    assert_eq!(codes(&out).last(), Some(&"250"), "{out}");
}

#[test]
fn size_limits_refuse_at_mail_and_after_data_and_the_session_goes_on() {
    let (out, _) = both_ways(b"LHLO x\r\nMAIL FROM:<a@x.example> SIZE=1001\r\nNOOP\r\n");
    assert!(out.contains("552 5.3.4 Message size exceeds"), "{out}");
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "250", "552", "250"]
    );

    let mut script = b"LHLO x\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<s@h.example>\r\n\
        RCPT TO:<t@h.example>\r\nDATA\r\n"
        .to_vec();
    for _ in 0..100 {
        script.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    script.extend_from_slice(
        b".\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<s@h.example>\r\nDATA\r\nsmall\r\n.\r\n",
    );
    let (out, mails) = both_ways(&script);
    let tail: Vec<&str> = codes(&out).into_iter().skip(10).collect();
    assert_eq!(tail, ["552", "552", "250", "250", "354", "250"], "{out}");
    assert_eq!(mails.len(), 1, "only the small one is handed over");
}

#[test]
fn an_empty_message_is_refused_for_each_recipient() {
    let (out, mails) = both_ways(
        b"LHLO x\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<s@h.example>\r\n\
          RCPT TO:<t@h.example>\r\nDATA\r\n.\r\n",
    );
    assert!(mails.is_empty());
    assert!(
        out.ends_with("554 5.6.0 Empty message refused\r\n554 5.6.0 Empty message refused\r\n"),
        "{out}"
    );
}

#[test]
fn commands_out_of_sequence_get_503() {
    let (out, _) = both_ways(
        b"MAIL FROM:<a@x.example>\r\nLHLO x\r\nRCPT TO:<s@h.example>\r\nDATA\r\n\
          MAIL FROM:<a@x.example>\r\nDATA\r\nMAIL FROM:<a@x.example>\r\nRSET\r\n\
          RCPT TO:<s@h.example>\r\n",
    );
    assert_eq!(
        codes(&out),
        [
            "220", "503", "250", "250", "250", "250", "250", "503", "503", "250", "503", "503",
            "250", "503"
        ],
        "{out}"
    );
    assert!(
        out.contains("503 5.5.1 Bad sequence of commands: Send LHLO first"),
        "{out}"
    );
}

#[test]
fn unknown_commands_bad_syntax_and_long_lines_are_refused_and_the_session_goes_on() {
    let mut script = b"LHLO x\r\nEHLO x\r\nRCPT TO:<s@h.example>\r\nVRFY s\r\n".to_vec();
    script.extend_from_slice(&[b'A'; 3000]);
    script.extend_from_slice(b"\r\nNOOP\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<nobody>\r\n");
    let (out, _) = both_ways(&script);
    let lines: Vec<&str> = out.lines().skip(6).collect();
    assert_eq!(
        lines,
        [
            "500 5.5.1 Command unrecognized",
            "503 5.5.1 Bad sequence of commands: Need MAIL before RCPT",
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            "500 5.5.2 Line too long",
            "250 2.0.0 Ok",
            "250 2.1.0 Ok",
            "501 5.1.3 Bad recipient address syntax",
        ],
        "{out}"
    );
    // A line of exactly the limit is still a command.
    let mut exact = b"NOOP ".to_vec();
    exact.resize(MAX_LINE - 2, b'x');
    exact.extend_from_slice(b"\r\n");
    assert_eq!(codes(&both_ways(&exact).0), ["220", "250"]);
}

#[test]
fn recipients_past_the_limit_wait_for_another_transaction() {
    let mut script = b"LHLO x\r\nMAIL FROM:<a@x.example>\r\n".to_vec();
    for i in 0..=MAX_RECIPIENTS {
        script.extend_from_slice(format!("RCPT TO:<r{i}@h.example>\r\n").as_bytes());
    }
    let (out, _) = converse(&script, script.len());
    assert_eq!(out.lines().last(), Some("452 4.5.3 Too many recipients"));
    assert_eq!(out.matches("250 2.1.5").count(), MAX_RECIPIENTS);
}

#[test]
fn a_failed_hand_over_asks_the_mta_to_retry_that_recipient() {
    let failed: Result<String, &str> = Err("the broker did not confirm");
    let r = recipient_reply("s@h.example", &failed);
    assert_eq!(
        r.to_string(),
        "451 4.3.0 <s@h.example> not queued, try again later: the broker did not confirm\r\n"
    );
}

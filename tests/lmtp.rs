//! `gochat lmtp` as a process, spoken to over TCP as an MTA would, against the real
//! RabbitMQ (a queue prefix of the test's own) and PostgreSQL: one confirmed job per
//! recipient, each answered in order; refusals (too large) that publish nothing; `451` when
//! the broker cannot be reached (the MTA keeps the mail); a graceful stop; and a mail that a
//! `gochat run` worker commits as a thread. Also `gochat bench lmtp` at a toy size.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::broker::{TestBroker, amqp_url, eventually};
use common::mail::TestMail;
use common::process::free_port;
use common::{Backend, TestDb, count, gochat, stderr, stdout};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SUPPORT: &str = "support@gochat.example";

/// A `gochat lmtp` process, killed if the test fails before stopping it.
struct Lmtp {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Lmtp {
    /// Starts `gochat lmtp` on a free port with these overrides (and `config`, a TOML
    /// text, as its file) and waits until it greets.
    async fn start(env: &[(&str, String)], config: &str) -> Lmtp {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("gochat.toml");
        std::fs::write(&conf, config).expect("write config");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join("lmtp.log");
        let mut cmd = gochat(dir.path(), "sqlite://unused.db");
        cmd.arg("lmtp")
            .env("GOCHAT_CONFIG", &conf)
            .env("GOCHAT_LMTP_ADDR", &addr)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut lmtp = Lmtp {
            child: cmd.spawn().expect("spawn gochat lmtp"),
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&lmtp.addr).await.is_err() {
            if let Ok(Some(status)) = lmtp.child.try_wait() {
                panic!("gochat lmtp exited ({status}): {}", lmtp.log());
            }
            assert!(Instant::now() < deadline, "gochat lmtp never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lmtp
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn session(&self) -> Client {
        Client::connect(&self.addr).await
    }

    /// SIGTERM, then the exit code within 20 s.
    fn stop(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "gochat lmtp did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MTA's side of a session, over TCP or a Unix socket.
struct Client {
    reader: BufReader<Box<dyn AsyncRead + Unpin + Send>>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
}

impl Client {
    /// Connects over TCP and checks the greeting.
    async fn connect(addr: &str) -> Client {
        let (rd, wr) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Client::over(Box::new(rd), Box::new(wr)).await
    }

    async fn over(
        rd: Box<dyn AsyncRead + Unpin + Send>,
        writer: Box<dyn AsyncWrite + Unpin + Send>,
    ) -> Client {
        let mut c = Client {
            reader: BufReader::new(rd),
            writer,
        };
        let greeting = c.replies(1).await;
        assert!(greeting[0].starts_with("220 "), "{greeting:?}");
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// The next `n` replies, each as its last line (multi-line ones joined by `|`).
    async fn replies(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line))
                        .await
                        .expect("a reply within 30 s")
                        .expect("read");
                assert!(read > 0, "the server closed the connection; got {lines:?}");
                let done = line.as_bytes().get(3) == Some(&b' ');
                lines.push(line.trim_end().to_owned());
                if done {
                    break;
                }
            }
            out.push(lines.join("|"));
        }
        out
    }

    /// LHLO, then MAIL, the RCPTs and DATA pipelined in one write; the replies to those.
    async fn envelope(&mut self, from: &str, to: &[&str]) -> Vec<String> {
        let mut cmds = format!("LHLO mta.test\r\nMAIL FROM:<{from}>\r\n");
        for r in to {
            cmds.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        cmds.push_str("DATA\r\n");
        self.send(cmds.as_bytes()).await;
        self.replies(to.len() + 3).await
    }

    /// True when the server closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line)).await,
            Ok(Ok(0))
        )
    }
}

fn broker_env(broker: &TestBroker) -> Vec<(&'static str, String)> {
    vec![
        ("GOCHAT_AMQP_URL", amqp_url()),
        ("GOCHAT_AMQP_PREFIX", broker.prefix.clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recipient_gets_its_confirmed_job_and_its_own_reply_in_order() {
    let broker = TestBroker::new().await;
    let mut lmtp = Lmtp::start(&broker_env(&broker), "[mail]\nmax_size = 2000\n").await;
    let queue = broker.names.queue("inbound-mail");
    let mail = TestMail::new(
        "ada@acme.example",
        SUPPORT,
        "Printer",
        "Hi,\n.hidden dot\nAda\n",
    );
    let raw = mail.bytes();
    let mut wire = client_stuffed(&raw);
    wire.extend_from_slice(b".\r\n");

    let mut c = lmtp.session().await;
    let replies = c
        .envelope("ada@acme.example", &[SUPPORT, "sales@gochat.example"])
        .await;
    assert!(replies[0].contains("250 SIZE 2000"), "{replies:?}");
    assert_eq!(
        &replies[1..],
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "354 Start mail input; end with <CRLF>.<CRLF>"
        ]
    );
    c.send(&wire).await;
    let per_recipient = c.replies(2).await;
    let mut ids = Vec::new();
    for (reply, rcpt) in per_recipient.iter().zip([SUPPORT, "sales@gochat.example"]) {
        let id = gochat::mail::gateway::job_id(&raw, &[rcpt.to_owned()]);
        assert_eq!(reply, &format!("250 2.0.0 <{rcpt}> queued as {id}"));
        ids.push((rcpt, id));
    }
    // Both jobs are in the queue, as mailgate builds them, one recipient each.
    for (rcpt, id) in &ids {
        let job = broker
            .get(&queue, Duration::from_secs(10))
            .await
            .expect("the job is queued");
        assert_eq!(job.message_id.as_deref(), Some(id.as_str()));
        let p = job.json();
        assert_eq!(p["schema"], "inbound-mail/v1");
        assert_eq!(p["recipients"], serde_json::json!([rcpt]));
        assert_eq!(p["envelope_from"], "ada@acme.example");
        assert!(
            p["received_at"]
                .as_str()
                .is_some_and(|t| t.starts_with("20")),
            "{p}"
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p["raw_base64"].as_str().expect("raw_base64"))
            .expect("base64");
        assert_eq!(bytes, raw, "the mail, dot-unstuffed, byte for byte");
    }

    // Too large: 552 for each recipient, nothing published, the session goes on.
    let replies = c.envelope("ada@acme.example", &[SUPPORT]).await;
    assert_eq!(
        replies.last().map(String::as_str),
        Some("354 Start mail input; end with <CRLF>.<CRLF>")
    );
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..100 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    big.extend_from_slice(b".\r\nNOOP\r\n");
    c.send(&big).await;
    let replies = c.replies(2).await;
    assert!(replies[0].starts_with("552 5.3.4 "), "{replies:?}");
    assert_eq!(replies[1], "250 2.0.0 Ok");
    // Announced too large: refused at MAIL.
    c.send(b"MAIL FROM:<ada@acme.example> SIZE=5000\r\n").await;
    assert!(c.replies(1).await[0].starts_with("552 5.3.4 "));

    // The MTA delivers the first mail again (its confirm came too late, say): same ids.
    c.send(b"RSET\r\n").await;
    c.replies(1).await;
    let replies = c.envelope("ada@acme.example", &[SUPPORT]).await;
    assert!(
        replies.last().is_some_and(|r| r.starts_with("354")),
        "{replies:?}"
    );
    c.send(&wire).await;
    assert_eq!(
        c.replies(1).await[0],
        format!("250 2.0.0 <{SUPPORT}> queued as {}", ids[0].1)
    );
    let again = broker
        .get(&queue, Duration::from_secs(10))
        .await
        .expect("queued");
    assert_eq!(again.message_id.as_deref(), Some(ids[0].1.as_str()));
    assert!(
        broker
            .get(&queue, Duration::from_millis(500))
            .await
            .is_none(),
        "nothing for the big one"
    );

    // SIGTERM: an idle session is told 421 4.3.2 and closed; the process exits 0.
    let mut idle = lmtp.session().await;
    assert_eq!(lmtp.stop(), Some(0), "{}", lmtp.log());
    assert!(c.replies(1).await[0].starts_with("421 4.3.2 "));
    assert!(idle.replies(1).await[0].starts_with("421 4.3.2 "));
    assert!(idle.closed().await);
    assert!(lmtp.log().contains("stopped cleanly"), "{}", lmtp.log());
    broker
        .cleanup(&gochat::config::AmqpConfig::default().retry_delays)
        .await;
}

/// What an MTA sends after DATA: a dot before each line that starts with one.
fn client_stuffed(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_unreachable_recipients_are_told_to_retry() {
    let down = vec![
        (
            "GOCHAT_AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
        ),
        (
            "GOCHAT_AMQP_PREFIX",
            format!("t{}.", uuid::Uuid::now_v7().simple()),
        ),
    ];
    let config =
        "[amqp]\nconfirm_timeout = \"1s\"\n[lmtp]\nmax_connections = 2\nidle_timeout = \"1s\"\n";
    let mut lmtp = Lmtp::start(&down, config).await;
    let mut c = lmtp.session().await;
    let replies = c
        .envelope("ada@acme.example", &[SUPPORT, "sales@gochat.example"])
        .await;
    assert!(
        replies.last().is_some_and(|r| r.starts_with("354")),
        "{replies:?}"
    );
    c.send(b"Subject: hi\r\n\r\nHello\r\n.\r\n").await;
    for (reply, rcpt) in c
        .replies(2)
        .await
        .iter()
        .zip([SUPPORT, "sales@gochat.example"])
    {
        assert_eq!(
            reply,
            &format!(
                "451 4.3.0 <{rcpt}> not queued, try again later: the message queue is unreachable"
            )
        );
    }
    c.send(b"QUIT\r\n").await;
    assert_eq!(c.replies(1).await[0], "221 2.0.0 Bye");
    assert!(c.closed().await);
    tokio::time::sleep(Duration::from_millis(200)).await; // its permit is back

    // Past lmtp.max_connections: 421 and closed, the MTA comes back later.
    let _busy = lmtp.session().await;
    let mut idle = lmtp.session().await;
    let mut third = TcpStream::connect(&lmtp.addr).await.expect("connect");
    let mut refusal = String::new();
    use tokio::io::AsyncReadExt;
    third.read_to_string(&mut refusal).await.expect("read");
    assert_eq!(
        refusal,
        "421 4.3.2 Too many connections, try again later\r\n"
    );
    // An idle session is closed after lmtp.idle_timeout.
    assert_eq!(
        idle.replies(1).await[0],
        "421 4.4.2 Idle timeout, closing connection"
    );
    assert!(idle.closed().await);
    assert_eq!(lmtp.stop(), Some(0), "{}", lmtp.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_sent_over_lmtp_becomes_a_thread_committed_by_the_worker_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await; // migrated
    let broker = TestBroker::new().await;
    let env = broker_env(&broker);
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("worker.toml");
    std::fs::write(&conf, "[amqp]\nconsume = [\"inbound-mail\"]\n").expect("write");
    let port = free_port();
    let worker_env: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain([("GOCHAT_CONFIG", conf.to_str().expect("path"))])
        .collect();
    let worker = common::process::start_worker(dir.path(), &db.url, port, &worker_env);
    common::process::wait_status(&format!("http://127.0.0.1:{port}/readyz"), 200).await;
    let lmtp = Lmtp::start(&env, "").await;

    let mail = TestMail::new(
        "grace@hopper.example",
        SUPPORT,
        "Compiler on fire",
        "Help!\n",
    );
    let mut c = lmtp.session().await;
    let replies = c.envelope("grace@hopper.example", &[SUPPORT]).await;
    assert!(
        replies.last().is_some_and(|r| r.starts_with("354")),
        "{replies:?}"
    );
    let mut wire = client_stuffed(&mail.bytes());
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    c.send(&wire).await;
    let replies = c.replies(2).await;
    assert!(replies[0].starts_with("250 2.0.0 "), "{replies:?}");

    let conn = store.conn();
    let sql = "SELECT COUNT(*) AS n FROM threads WHERE subject = 'Compiler on fire'";
    eventually(Duration::from_secs(30), "the thread committed", || async {
        (count(conn, sql).await == 1).then_some(())
    })
    .await;
    let id = replies[0].rsplit(' ').next().expect("job id");
    let applied = format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE message_id = '{id}'");
    assert_eq!(count(conn, &applied).await, 1, "{}", worker.log());
    drop(lmtp);
    drop(worker);
    broker
        .cleanup(&gochat::config::AmqpConfig::default().retry_delays)
        .await;
}

/// `gochat bench lmtp` at a toy size: the figures are for a release build; this checks the
/// command runs both phases on PostgreSQL and RabbitMQ and ends with its JSON report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_lmtp_ends_with_its_json_report() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gochat(dir.path(), &db.url)
        .env("GOCHAT_AMQP_URL", amqp_url())
        .env("RUST_LOG", "warn")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(
            "bench lmtp --mails 60 --connections 3 --warm-up 10 --database-url".split_whitespace(),
        )
        .arg(&db.url)
        .output()
        .expect("run gochat bench lmtp");
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    let report: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a last line")).expect("JSON last line");
    assert_eq!(report["bench"], "lmtp", "{report}");
    assert_eq!(report["database"], "postgres", "{report}");
    assert_eq!(report["refused"], 0, "{report}");
    assert!(report["accepted_per_sec"].as_f64() > Some(0.0), "{report}");
    assert!(
        report["with_worker"]["committed_per_sec"].as_f64() > Some(0.0),
        "{report}"
    );
    let threads = "SELECT COUNT(*) AS n FROM threads";
    let store = db.store().await;
    // 80 % of the warm-up's and the measured run's mails open threads.
    assert!(count(store.conn(), threads).await >= 50, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mta_may_deliver_over_a_unix_socket_too() {
    let broker = TestBroker::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("lmtp.sock");
    // A stale socket file, as a crash leaves it, is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    let config = format!("[lmtp]\nsocket = {:?}\n", socket.display().to_string());
    let mut lmtp = Lmtp::start(&broker_env(&broker), &config).await;
    // Bound just after the TCP port the start waited for.
    let stream = eventually(Duration::from_secs(5), "the socket", || async {
        tokio::net::UnixStream::connect(&socket).await.ok()
    })
    .await;
    let (rd, wr) = stream.into_split();
    let mut c = Client::over(Box::new(rd), Box::new(wr)).await;
    let replies = c.envelope("ada@acme.example", &[SUPPORT]).await;
    assert!(
        replies.last().is_some_and(|r| r.starts_with("354")),
        "{replies:?}"
    );
    let raw = TestMail::new("ada@acme.example", SUPPORT, "Socket", "Hi\n").bytes();
    let mut wire = client_stuffed(&raw);
    wire.extend_from_slice(b".\r\n");
    c.send(&wire).await;
    let id = gochat::mail::gateway::job_id(&raw, &[SUPPORT.to_owned()]);
    assert_eq!(
        c.replies(1).await[0],
        format!("250 2.0.0 <{SUPPORT}> queued as {id}")
    );
    let job = broker
        .get(&broker.names.queue("inbound-mail"), Duration::from_secs(10))
        .await
        .expect("queued");
    assert_eq!(job.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(lmtp.stop(), Some(0), "{}", lmtp.log());
    assert!(!socket.exists(), "the socket is removed on stop");
    broker
        .cleanup(&gochat::config::AmqpConfig::default().retry_delays)
        .await;
}

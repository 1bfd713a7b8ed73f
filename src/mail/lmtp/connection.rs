//! One client connection: reads into the session, writes its replies, hands mails to the
//! gateway. Replies are written when the session needs more input, so a pipelined burst
//! of commands is answered with one write (RFC 2920).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::deliver::Gateway;
use super::reply::Reply;
use super::session::{Event, Limits, Session, recipient_reply};
use crate::shutdown::Shutdown;

/// Bytes read at a time; a message arrives in pieces this large.
const READ_CHUNK: usize = 64 * 1024;

/// How long a session waits, by what it waits for.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the next command.
    pub idle: Duration,
    /// For the next bytes of a message, and for a reply to be taken by the client.
    pub read: Duration,
}

/// How a session ended, for the log.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no bytes of the message for {0:?}")]
    DataTimeout(Duration),
    #[error("the client did not take our reply within {0:?}")]
    WriteTimeout(Duration),
}

/// Serves one connection until QUIT, the client leaving, a timeout or shutdown.
pub async fn serve<S>(
    stream: S,
    limits: Limits,
    timeouts: Timeouts,
    gateway: Arc<Gateway>,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match drive(stream, limits, timeouts, &gateway, shutdown).await {
        Ok(()) => tracing::debug!("LMTP session ended"),
        Err(e) => tracing::debug!(error = %e, "LMTP session ended"),
    }
}

async fn drive<S>(
    stream: S,
    limits: Limits,
    timeouts: Timeouts,
    gateway: &Gateway,
    mut shutdown: Shutdown,
) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut session = Session::new(limits);
    let mut out = Vec::with_capacity(1024);
    session.greeting().write_to(&mut out);
    let mut input = Vec::with_capacity(8 * 1024);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while let Some(event) = session.next(&mut input) {
            match event {
                Event::Reply(r) => r.write_to(&mut out),
                Event::Close(r) => {
                    r.write_to(&mut out);
                    return send(&mut wr, &mut out, timeouts.read).await;
                }
                Event::Deliver(mail) => {
                    send(&mut wr, &mut out, timeouts.read).await?;
                    let outcomes = gateway.deliver(&mail).await;
                    for (recipient, outcome) in mail.recipients.iter().zip(&outcomes) {
                        match outcome {
                            Ok(job) => tracing::debug!(%job, bytes = mail.raw.len(), "mail queued"),
                            Err(e) => {
                                tracing::warn!(error = %e, "mail not queued; the MTA will retry")
                            }
                        }
                        recipient_reply(recipient, outcome).write_to(&mut out);
                    }
                }
            }
        }
        send(&mut wr, &mut out, timeouts.read).await?;
        if session.in_data() {
            // A message being received is finished even during shutdown.
            match tokio::time::timeout(timeouts.read, rd.read(&mut chunk)).await {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => input.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(Ended::DataTimeout(timeouts.read)),
            }
            continue;
        }
        let read = tokio::select! {
            // Shutdown first: a client that keeps sending must not keep an idle session on.
            biased;
            _ = shutdown.recv() => {
                let bye = Reply::new(421, "4.3.2", "Service shutting down, try again later");
                bye.write_to(&mut out);
                return send(&mut wr, &mut out, timeouts.read).await;
            }
            r = tokio::time::timeout(timeouts.idle, rd.read(&mut chunk)) => r,
        };
        match read {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => input.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                Reply::new(421, "4.4.2", "Idle timeout, closing connection").write_to(&mut out);
                return send(&mut wr, &mut out, timeouts.read).await;
            }
        }
    }
}

/// Writes what `out` holds, if anything, and empties it.
async fn send<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), Ended> {
    if out.is_empty() {
        return Ok(());
    }
    let written = tokio::time::timeout(limit, async {
        wr.write_all(out).await?;
        wr.flush().await
    })
    .await
    .map_err(|_| Ended::WriteTimeout(limit))?;
    out.clear();
    written.map_err(Ended::from)
}

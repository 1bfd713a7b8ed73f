//! `gochat lmtp`: an LMTP server (RFC 2033) for the MTA's hand-over, as Dovecot, Cyrus and
//! Mailman take mail from Postfix and Exim. Each accepted recipient's mail becomes an
//! `inbound-mail` job (built as `gochat mailgate` builds it), and the recipient is answered
//! `250` only once the broker confirmed that job.
//!
//! `session` is the protocol without I/O (commands in `command`, the message in `data`,
//! replies in `reply`); `connection` drives a session over a socket, `server` accepts the
//! connections, and `deliver` publishes the mails.

pub mod command;
mod connection;
pub mod data;
pub mod deliver;
pub mod reply;
mod server;
pub mod session;

pub use deliver::{DeliverError, Gateway};
pub use reply::Reply;
pub use server::{Server, ServerError};
pub use session::{Event, Limits, Mail, Session};

//! Mail: message templates, MIME building and SMTP delivery for outbound mail; parsing,
//! classification (auto-reply, bounce, feedback report) and HTML sanitising for inbound
//! mail; the MTA's hand-over (the job a gateway builds, the LMTP server).

pub mod auth;
pub mod classify;
pub mod dates;
pub mod gateway;
pub mod html;
pub mod inbound;
pub mod lmtp;
pub mod mime;
pub mod parse;
pub mod smtp;
pub mod templates;

pub use html::text_from_html;
pub use templates::{RenderError, Rendered, Templates};

//! Mail: message templates, MIME building and SMTP delivery for outbound mail; parsing,
//! classification (auto-reply, bounce, feedback report) and HTML sanitising for inbound
//! mail.

pub mod auth;
pub mod classify;
pub mod dates;
pub mod html;
pub mod inbound;
pub mod mime;
pub mod parse;
pub mod smtp;
pub mod templates;

pub use html::text_from_html;
pub use templates::{RenderError, Rendered, Templates};

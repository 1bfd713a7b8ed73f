//! Mail: message templates now; MIME building, SMTP delivery and parsing as the outbound and
//! inbound jobs land.

pub mod mime;
pub mod smtp;
pub mod templates;

pub use templates::{RenderError, Rendered, Templates};

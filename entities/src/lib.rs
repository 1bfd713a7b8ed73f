//! SeaORM entities of the Go!Chat schema, one module per table (see `docs/storage.md`).
//!
//! Enumerated columns are stored as short strings (portable to SQLite) and exposed here as
//! Rust enums, so the application cannot write a status the schema does not know.

pub mod api_keys;
pub mod attachments;
pub mod blobs;
pub mod comments;
pub mod contacts;
pub mod customer_contacts;
pub mod customers;
pub mod dead_jobs;
pub mod messages;
pub mod outbox;
pub mod processed_jobs;
pub mod raw_mails;
pub mod thread_customers;
pub mod thread_events;
pub mod thread_tags;
pub mod threads;
pub mod timers;

/// The entity types under readable names.
pub mod prelude {
    pub use super::api_keys::Entity as ApiKey;
    pub use super::attachments::Entity as Attachment;
    pub use super::blobs::Entity as Blob;
    pub use super::comments::Entity as Comment;
    pub use super::contacts::Entity as Contact;
    pub use super::customer_contacts::Entity as CustomerContact;
    pub use super::customers::Entity as Customer;
    pub use super::dead_jobs::Entity as DeadJob;
    pub use super::messages::Entity as Message;
    pub use super::outbox::Entity as Outbox;
    pub use super::processed_jobs::Entity as ProcessedJob;
    pub use super::raw_mails::Entity as RawMail;
    pub use super::thread_customers::Entity as ThreadCustomer;
    pub use super::thread_events::Entity as ThreadEvent;
    pub use super::thread_tags::Entity as ThreadTag;
    pub use super::threads::Entity as Thread;
    pub use super::timers::Entity as Timer;
}

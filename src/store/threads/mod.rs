//! Write side of threads: create a thread, add messages and comments, change status,
//! assignee, tags and customers. Every change bumps the thread's `version` with a
//! compare-and-set, so two writers racing on one thread never both win: the loser gets
//! [`StoreError::Conflict`](crate::store::StoreError::Conflict) (transient: its job is
//! retried against the new state).
//!
//! Each change also writes a `thread_events` row (the audit shown in the feed); the caller
//! passes the actor. All functions take a connection or a transaction: the job handler runs
//! them inside the job's transaction.
//!
//! One file a table or concern; everything is used as `store::threads::<item>`:
//! - `lookup`: finding a thread (by id, reply token, Message-ID)
//! - `open`: new threads, built first and written alone or with their first messages
//! - `card`: the thread row (its inbox card), the version-checked save, status, assignee,
//!   flags
//! - `messages`: messages and what they put on the card
//! - `attachments`: message files and their content-addressed blobs
//! - `comments`: internal comments
//! - `tags`: the thread's tags
//! - `customers`: the customers a thread is for
//! - `events`: the `thread_events` audit rows

mod attachments;
mod card;
mod comments;
mod customers;
mod events;
mod lookup;
mod messages;
mod open;
mod tags;

pub use attachments::NewAttachment;
pub use card::{add_flag, bump, set_assignee, set_status, status_change};
pub use comments::{add_comment, comment_row, insert_comments, with_comment};
pub(crate) use customers::customer_ids_query;
pub use customers::{customer_ids, set_customers};
pub use events::{event_with_detail, insert_events, record_event};
pub use lookup::{by_message_ids, by_reply_token, get, get_for_update};
pub use messages::{NewMessage, Target, add_message, add_messages, create_with_message};
pub use open::{NewThread, PreparedThread, create, insert_prepared, insert_prepared_many, prepare};
pub use tags::{change_tags, tags};

//! What `match_thread` looks up for each reply of a batch, read for the whole batch at once:
//! the stored messages their In-Reply-To and References name, those messages' threads
//! (locked, in id order), and which senders are contacts of those threads' customers. Three
//! statements a batch instead of three a reply; in the `bench e2e` mix, replies were most of
//! the inbound mails' statements.
//!
//! A read-ahead answers only what it was asked (`None` otherwise, and the caller reads the
//! database as before), and holds the state of the database when it was read: the engine
//! takes one only for a step that runs alone between two set-based steps, so nothing but
//! that step's own runs changes those rows meanwhile, and each run's changes to a thread
//! reach the next through [`super::Tx::newer_thread`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use gochat_entities::{customer_contacts, messages, thread_customers, threads};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use uuid::Uuid;

use super::StoreError;
use super::inbound::ROWS_PER_STATEMENT;

#[derive(Debug, Default)]
pub struct MatchReadAhead {
    /// Every Message-ID read, with the newest stored message carrying it.
    newest: HashMap<String, Option<(DateTime<Utc>, Uuid)>>,
    /// The threads of those messages, locked until the transaction ends.
    threads: HashMap<Uuid, threads::Model>,
    /// Every own Message-ID read, with the thread of the newest stored reply to it.
    answering: HashMap<String, Option<Uuid>>,
    /// The contacts asked about, and the (contact, thread) pairs where the contact belongs
    /// to one of the thread's customers.
    contacts: HashSet<Uuid>,
    members: HashSet<(Uuid, Uuid)>,
}

impl MatchReadAhead {
    /// Reads what `ids` (Message-IDs answered), `own` (the mails' own Message-IDs, which a
    /// reply that came first may answer) and `contacts` (senders) would be asked about.
    pub async fn read(
        db: &impl ConnectionTrait,
        ids: &[String],
        own: &[String],
        contacts: &[Uuid],
    ) -> Result<Self, StoreError> {
        let backend = db.get_database_backend();
        let mut out = Self {
            newest: ids.iter().map(|id| (id.clone(), None)).collect(),
            contacts: contacts.iter().copied().collect(),
            ..Self::default()
        };
        let newest =
            super::inbound::newest_by(db, messages::Column::MessageIdHeader, ids, None).await?;
        for (id, hit) in newest {
            out.newest.insert(id, Some(hit));
        }
        let answering = super::inbound::threads_answering(db, own).await?;
        out.answering = own
            .iter()
            .map(|id| (id.clone(), answering.get(id).map(|(_, t)| *t)))
            .collect();
        let mut found: Vec<Uuid> = out.newest.values().flatten().map(|(_, t)| *t).collect();
        found.extend(out.answering.values().flatten());
        found.sort();
        found.dedup();
        out.threads = super::cards::get_many_for_update(db, &found).await?;
        // Two id lists a statement, each within the bound.
        for thread_ids in found.chunks(ROWS_PER_STATEMENT) {
            for contact_ids in contacts.chunks(ROWS_PER_STATEMENT) {
                let q = Query::select()
                    .column((
                        customer_contacts::Entity,
                        customer_contacts::Column::ContactId,
                    ))
                    .column((thread_customers::Entity, thread_customers::Column::ThreadId))
                    .distinct()
                    .from(customer_contacts::Entity)
                    .inner_join(
                        thread_customers::Entity,
                        Expr::col((
                            thread_customers::Entity,
                            thread_customers::Column::CustomerId,
                        ))
                        .equals((
                            customer_contacts::Entity,
                            customer_contacts::Column::CustomerId,
                        )),
                    )
                    .and_where(super::bulk::any_of(
                        backend,
                        customer_contacts::Column::ContactId,
                        contact_ids.iter().copied(),
                    ))
                    .and_where(super::bulk::any_of(
                        backend,
                        thread_customers::Column::ThreadId,
                        thread_ids.iter().copied(),
                    ))
                    .to_owned();
                for row in db.query_all_raw(backend.build(&q)).await? {
                    out.members
                        .insert((row.try_get_by_index(0)?, row.try_get_by_index(1)?));
                }
            }
        }
        Ok(out)
    }

    /// What [`super::inbound::by_message_ids`] would answer for `ids`, if all were read.
    pub fn by_message_ids(&self, ids: &[String]) -> Option<Option<(String, Uuid)>> {
        let mut best: Option<(DateTime<Utc>, &String, Uuid)> = None;
        for id in ids {
            if let Some((at, thread)) = *self.newest.get(id)?
                && best.is_none_or(|(b, _, _)| at > b)
            {
                best = Some((at, id, thread));
            }
        }
        Some(best.map(|(_, id, thread)| (id.clone(), thread)))
    }

    /// What [`super::inbound::threads_answering`] would answer for `id`, if it was read.
    pub fn answering(&self, id: &str) -> Option<Option<Uuid>> {
        self.answering.get(id).copied()
    }

    /// The thread as read (and locked), if it was.
    pub fn thread(&self, id: Uuid) -> Option<&threads::Model> {
        self.threads.get(&id)
    }

    /// Whether `contact` belongs to one of the thread's customers, if both were read.
    pub fn is_member(&self, contact: Uuid, thread: Uuid) -> Option<bool> {
        (self.contacts.contains(&contact) && self.threads.contains_key(&thread))
            .then(|| self.members.contains(&(contact, thread)))
    }
}

//! What a batch's jobs learn from each other before they commit: the mails matched to a
//! thread and not stored yet, the newest card of each thread written, and lookups read
//! ahead for a whole step. Workflow state, so it lives here and not in the store's
//! transaction; the engine drops it with the batch, and a step that commits midway clears
//! it ([`Memo::clear`]).

use std::collections::HashMap;

use gochat_entities::threads;

use crate::store::read_ahead::MatchReadAhead;

#[derive(Default)]
pub struct Memo {
    /// Mails matched to a thread and not stored yet, by Message-ID, with the order they
    /// were matched in (see [`Memo::note_unstored_mail`]).
    unstored_mails: HashMap<String, (usize, UnstoredMail)>,
    /// The Message-IDs those mails answer, to their own.
    unstored_replies: HashMap<String, String>,
    /// How many mails were noted: the order they were matched in.
    noted_mails: usize,
    /// The newest card of each thread written by the batch (see [`Memo::note_thread`]).
    threads: HashMap<uuid::Uuid, threads::Model>,
    /// Lookups read ahead for the step running now (see [`crate::workflow::Action::read_ahead`]).
    read_ahead: Option<Box<MatchReadAhead>>,
}

/// A mail of the batch matched to its thread and not stored yet.
#[derive(Debug, Clone)]
pub struct UnstoredMail {
    pub thread: uuid::Uuid,
    /// When its thread is new and not written yet either: the thread and its customers.
    pub opens: Option<(threads::Model, Vec<uuid::Uuid>)>,
}

impl Memo {
    /// Forgets everything: after a commit midway the locks behind it are gone.
    pub fn clear(&mut self) {
        *self = Memo::default();
    }

    /// Keeps lookups read for the step running now, until [`Memo::end_read_ahead`].
    pub fn set_read_ahead(&mut self, read: MatchReadAhead) {
        self.read_ahead = Some(Box::new(read));
    }

    /// The lookups read ahead, if any are current.
    pub fn read_ahead(&self) -> Option<&MatchReadAhead> {
        self.read_ahead.as_deref()
    }

    pub fn end_read_ahead(&mut self) {
        self.read_ahead = None;
    }

    /// Notes that the mail with this Message-ID has its thread but is not stored yet. A
    /// batch's mails are stored together once all of them are matched, so a later mail of
    /// the batch that answers this one would not find it in the database: it asks
    /// [`Memo::unstored_mail`] instead. `answers` is the Message-ID its `In-Reply-To`
    /// names, for a mail of the batch that comes after its reply ([`Memo::unstored_reply_to`]).
    pub fn note_unstored_mail(
        &mut self,
        message_id: &str,
        answers: Option<&str>,
        mail: UnstoredMail,
    ) {
        self.noted_mails += 1;
        self.unstored_mails
            .insert(message_id.to_owned(), (self.noted_mails, mail));
        if let Some(answered) = answers {
            self.unstored_replies
                .insert(answered.to_owned(), message_id.to_owned());
        }
    }

    /// The mail with this Message-ID is stored now (see [`Memo::note_unstored_mail`]).
    pub fn mail_stored(&mut self, message_id: &str) {
        self.unstored_mails.remove(message_id);
    }

    /// A mail of the batch not stored yet that answers `message_id` (its reply came
    /// first), with its own Message-ID.
    pub fn unstored_reply_to(&self, message_id: &str) -> Option<(&str, &UnstoredMail)> {
        let reply = self.unstored_replies.get(message_id)?;
        self.unstored_mails
            .get(reply)
            .map(|(_, m)| (reply.as_str(), m))
    }

    /// Of `ids`, the mail of the batch not stored yet that was matched last (the newest,
    /// as threading prefers among stored mails), with its Message-ID.
    pub fn unstored_mail<'a>(&'a self, ids: &'a [String]) -> Option<(&'a str, &'a UnstoredMail)> {
        ids.iter()
            .filter_map(|id| {
                self.unstored_mails
                    .get(id)
                    .map(|(order, m)| (*order, id, m))
            })
            .max_by_key(|(order, _, _)| *order)
            .map(|(_, id, m)| (id.as_str(), m))
    }

    /// Keeps `t` as its thread's newest card in the batch, if it is newer. Each job keeps
    /// its own copy of its thread from step to step; when two jobs of the batch share a
    /// thread, the later one takes the newer card from here instead of failing its
    /// version check on an old one.
    pub fn note_thread(&mut self, t: &threads::Model) {
        match self.threads.get(&t.id) {
            Some(known) if known.version >= t.version => {}
            _ => {
                self.threads.insert(t.id, t.clone());
            }
        }
    }

    /// A newer card of `t`'s thread written by the batch, if there is one.
    pub fn newer_thread(&self, t: &threads::Model) -> Option<&threads::Model> {
        self.threads.get(&t.id).filter(|n| n.version > t.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn thread(id: Uuid, version: i64) -> threads::Model {
        threads::Model {
            id,
            subject: "s".into(),
            status: threads::ThreadStatus::Open,
            assignee: None,
            lifecycle: "default".into(),
            lifecycle_step: None,
            reply_token: "t".into(),
            mailbox: None,
            linked_thread_id: None,
            version,
            flags: serde_json::json!([]),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            last_message_at: None,
            snippet: None,
            has_attachments: false,
            attachment_names: serde_json::json!([]),
            item_count: 0,
            contact_id: None,
        }
    }

    #[test]
    fn the_newest_unstored_mail_answered_wins_and_a_stored_one_is_forgotten() {
        let mut memo = Memo::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // A matched mail of a stored thread.
        let note = |memo: &mut Memo, id: &str, thread: Uuid| {
            memo.note_unstored_mail(
                id,
                Some("parent@x"),
                UnstoredMail {
                    thread,
                    opens: None,
                },
            )
        };
        note(&mut memo, "first@x", a);
        note(&mut memo, "second@x", b);
        // Matched last, so newer, wherever it stands among the headers.
        let both = ids(&["second@x", "first@x"]);
        let found = memo.unstored_mail(&both);
        assert_eq!(found.map(|(id, m)| (id, m.thread)), Some(("second@x", b)));
        // The mail they answer, coming after them, finds the newest reply.
        let reply = memo.unstored_reply_to("parent@x");
        assert_eq!(reply.map(|(id, m)| (id, m.thread)), Some(("second@x", b)));
        memo.mail_stored("second@x");
        let found = memo.unstored_mail(&both);
        assert_eq!(found.map(|(id, m)| (id, m.thread)), Some(("first@x", a)));
        // Noted after a removal, it is still newer than every mail noted before.
        note(&mut memo, "second@x", b);
        memo.mail_stored("first@x");
        note(&mut memo, "third@x", a);
        let later = ids(&["third@x", "second@x"]);
        let found = memo.unstored_mail(&later);
        assert_eq!(found.map(|(id, _)| id), Some("third@x"));
        assert!(memo.unstored_mail(&ids(&["other@x"])).is_none());
        memo.clear();
        assert!(memo.unstored_mail(&later).is_none());
    }

    #[test]
    fn only_a_newer_card_of_a_thread_replaces_a_jobs_copy() {
        let mut memo = Memo::default();
        let id = Uuid::now_v7();
        memo.note_thread(&thread(id, 3));
        memo.note_thread(&thread(id, 2)); // older: ignored
        assert_eq!(
            memo.newer_thread(&thread(id, 2)).map(|t| t.version),
            Some(3)
        );
        assert!(memo.newer_thread(&thread(id, 3)).is_none());
        assert!(memo.newer_thread(&thread(Uuid::now_v7(), 1)).is_none());
    }
}

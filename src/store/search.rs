//! Keyword search over threads (the inbox's `q`, issue 33): a thread matches when every
//! term of the query is found in its subject, a message's subject or text, its contact's
//! name or address, or one of its customers' name or external id. Accents and case do not
//! matter (text is folded by [`fold`] on both sides); `"quoted phrases"` match as written.
//!
//! The index (`search_docs`, `search_parties`; see the migration) is written in the
//! transaction that writes what it indexes: messages by [`super::threads::add_messages`],
//! contacts and customers by [`super::customers`]. So a rolled-back message is never found.
//!
//! User text only ever reaches the database as bound values: folded terms hold letters,
//! digits and spaces, and become a `phraseto_tsquery('simple', $n)` on PostgreSQL or a
//! quoted FTS5 string on SQLite, so `NEAR`, `*`, `-`, `&|!<->` and the like are words or
//! nothing, never operators.
//!
//! Results are in the inbox's order (`updated_at`, then `id`, newest first), never by rank.
//! Which plan is fast depends on how common a word is, which PostgreSQL's planner guesses
//! badly; [`find_threads`] therefore does not leave it to the planner (see there).

use gochat_entities::threads;
use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Query, SimpleExpr};
use sea_orm::{
    ConnectionTrait, DbBackend, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select, Statement, TransactionSession, TransactionTrait, Value,
};
use uuid::Uuid;

use super::StoreError;

pub use gochat_migrations::search_text::{MAX_INDEXED_BYTES, fold};
use gochat_migrations::search_text::{message_text, party_text, subject_needs_own_doc};

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 256;

/// Most terms (words and phrases) in one query: each is one more index lookup.
pub const MAX_TERMS: usize = 8;

/// A parsed keyword query: words and "quoted phrases", folded; all must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Each term's folded words, space-separated; a word that folds to several (`e-mail`)
    /// is a phrase of them.
    terms: Vec<String>,
}

impl SearchQuery {
    /// The folded terms, each a word or a phrase of space-separated words.
    pub fn terms(&self) -> &[String] {
        &self.terms
    }
}

/// Why a query was refused; the messages are meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("the search has no word to look for (only spaces or punctuation)")]
    Empty,
    #[error("the search is {chars} characters long; at most {max} are allowed")]
    TooLong { chars: usize, max: usize },
    #[error("the search has {terms} words or phrases; at most {max} are allowed")]
    TooManyTerms { terms: usize, max: usize },
}

/// Parses `q`: words separated by spaces, and phrases in double quotes (an unclosed quote
/// runs to the end). Terms that fold to nothing (punctuation) are dropped, repeats too.
pub fn parse(q: &str) -> Result<SearchQuery, SearchError> {
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(SearchError::TooLong {
            chars,
            max: MAX_QUERY_CHARS,
        });
    }
    let mut raw: Vec<&str> = Vec::new();
    for (i, part) in q.split('"').enumerate() {
        if i % 2 == 1 {
            raw.push(part);
        } else {
            raw.extend(part.split_whitespace());
        }
    }
    let mut terms: Vec<String> = Vec::new();
    for t in raw {
        let folded = fold(t);
        if !folded.is_empty() && !terms.contains(&folded) {
            terms.push(folded);
        }
    }
    if terms.is_empty() {
        return Err(SearchError::Empty);
    }
    if terms.len() > MAX_TERMS {
        return Err(SearchError::TooManyTerms {
            terms: terms.len(),
            max: MAX_TERMS,
        });
    }
    Ok(SearchQuery { terms })
}

/// A condition on `threads` (for `threads::Entity::find().filter(..)`) that holds when
/// every term matches the thread. Each term is an `IN` over the threads whose documents,
/// contact or customers match it: the shape for rare words (the index finds the few
/// threads, which are then sorted). For a page of the inbox on PostgreSQL use
/// [`find_threads`], which is also fast for common words.
pub fn thread_condition(backend: DbBackend, q: &SearchQuery) -> SimpleExpr {
    all(q.terms.iter().map(|t| matching_threads(backend, t)))
}

/// [`thread_condition`] for PostgreSQL written to be checked thread by thread: `EXISTS`
/// on the thread's own documents, its contact and customers. The shape for common words,
/// where walking the newest threads finds a page after a few. `OFFSET 0` keeps the planner
/// from turning the `EXISTS` into a hash of every document with the word (measured: 300 ms
/// for a word in 6 % of 1,000,000 documents, against 2 ms checked thread by thread).
fn per_thread_condition(q: &SearchQuery) -> SimpleExpr {
    all(q.terms.iter().map(|t| {
        Expr::cust_with_values(
            "(EXISTS (SELECT 1 FROM search_docs s WHERE s.thread_id = \"threads\".\"id\" \
               AND s.tsv @@ phraseto_tsquery('simple', $1) OFFSET 0) \
             OR \"threads\".\"contact_id\" IN (SELECT p.id FROM search_parties p \
               WHERE p.tsv @@ phraseto_tsquery('simple', $2)) \
             OR EXISTS (SELECT 1 FROM thread_customers tc WHERE tc.thread_id = \"threads\".\"id\" \
               AND tc.customer_id IN (SELECT p.id FROM search_parties p \
               WHERE p.tsv @@ phraseto_tsquery('simple', $3))))",
            [t.clone(), t.clone(), t.clone()],
        )
    }))
}

/// `threads.id IN (…)`: the threads one term matches.
fn matching_threads(backend: DbBackend, term: &str) -> SimpleExpr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_values(
            "\"threads\".\"id\" IN (\
               SELECT s.thread_id FROM search_docs s \
                 WHERE s.tsv @@ phraseto_tsquery('simple', $1) \
               UNION ALL SELECT t.id FROM threads t WHERE t.contact_id IN (\
                 SELECT p.id FROM search_parties p WHERE p.tsv @@ phraseto_tsquery('simple', $2)) \
               UNION ALL SELECT tc.thread_id FROM thread_customers tc WHERE tc.customer_id IN (\
                 SELECT p.id FROM search_parties p WHERE p.tsv @@ phraseto_tsquery('simple', $3)))",
            [term.to_owned(), term.to_owned(), term.to_owned()],
        ),
        _ => {
            // One FTS5 string: the folded words hold no `"`, doubled anyway.
            let phrase = format!("\"{}\"", term.replace('"', "\"\""));
            Expr::cust_with_values(
                "\"threads\".\"id\" IN (\
                   SELECT thread_id FROM search_docs WHERE search_docs MATCH ? \
                   UNION ALL SELECT t.id FROM threads t WHERE t.contact_id IN (\
                     SELECT id FROM search_parties WHERE search_parties MATCH ?) \
                   UNION ALL SELECT tc.thread_id FROM thread_customers tc WHERE tc.customer_id IN (\
                     SELECT id FROM search_parties WHERE search_parties MATCH ?))",
                [phrase.clone(), phrase.clone(), phrase],
            )
        }
    }
}

fn all(conditions: impl Iterator<Item = SimpleExpr>) -> SimpleExpr {
    conditions
        .reduce(|a, b| a.and(b))
        .unwrap_or_else(|| Expr::val(true))
}

/// The longest one search statement may run on PostgreSQL.
pub const SEARCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Threads walked newest first per thread asked for, before [`find_threads`] turns to the
/// index instead: a term on fewer than 1 % of the threads would need a longer walk.
const WALK_PER_ROW: u64 = 100;

/// The first `limit` threads of `base` (a `threads` query with its filters, such as status
/// or the keyset of the page, and no order or limit) that match `q`, newest update first.
///
/// On PostgreSQL, in two steps whose plans do not depend on the planner's guess of how
/// common a word is (it takes a word missing from its statistics for a common one, and a
/// prepared statement's generic plan knows no word at all):
/// 1. the newest `100 × limit` threads of `base`, each checked for the terms: a common
///    word fills the page there;
/// 2. when it does not (a rarer word), the threads the index finds for each term, sorted.
///
/// Custom plans are asked for (`plan_cache_mode`, for this transaction only), so each step
/// is planned for the words it is given. SQLite runs step 2 only: FTS5 cannot check one
/// thread's documents without reading the word's whole list.
pub async fn find_threads<C>(
    db: &C,
    base: Select<threads::Entity>,
    q: &SearchQuery,
    limit: u64,
) -> Result<Vec<threads::Model>, StoreError>
where
    C: ConnectionTrait + TransactionTrait,
{
    let backend = db.get_database_backend();
    let limit = Ord::max(limit, 1);
    let newest_first = |s: Select<threads::Entity>| {
        s.order_by_desc(threads::Column::UpdatedAt)
            .order_by_desc(threads::Column::Id)
    };
    if backend != DbBackend::Postgres {
        return Ok(newest_first(base.filter(thread_condition(backend, q)))
            .limit(limit)
            .all(db)
            .await?);
    }
    let tx = db.begin().await?;
    // A bound on the worst case (a phrase of common words that occurs nowhere must check
    // the positions of every document holding all of them): past it the search is refused
    // with a message saying how to narrow it, instead of holding a connection for seconds.
    tx.execute_unprepared(&format!(
        "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL statement_timeout = {}",
        SEARCH_TIMEOUT.as_millis()
    ))
    .await?;
    let walk = limit.saturating_mul(WALK_PER_ROW);
    let window = newest_first(base.clone()).limit(walk).into_query();
    let mut step1 = Query::select();
    step1
        .column(Asterisk)
        .from_subquery(window, Alias::new("threads"))
        .and_where(per_thread_condition(q))
        .order_by(
            (Alias::new("threads"), Alias::new("updated_at")),
            Order::Desc,
        )
        .order_by((Alias::new("threads"), Alias::new("id")), Order::Desc)
        .limit(limit);
    let found = threads::Entity::find()
        .from_raw_sql(backend.build(&step1))
        .all(&tx)
        .await
        .map_err(timed_out)?;
    let found = if found.len() as u64 == limit {
        found
    } else {
        // The window held every thread of `base`: what it found is all there is.
        let window_full = newest_first(base.clone())
            .select_only()
            .column(threads::Column::Id)
            .offset(walk - 1)
            .limit(1)
            .into_tuple::<Uuid>()
            .one(&tx)
            .await
            .map_err(timed_out)?
            .is_some();
        if window_full {
            newest_first(base.filter(thread_condition(backend, q)))
                .limit(limit)
                .all(&tx)
                .await
                .map_err(timed_out)?
        } else {
            found
        }
    };
    tx.commit().await?;
    Ok(found)
}

/// A search statement cancelled by [`SEARCH_TIMEOUT`] becomes a refusal the person who
/// typed the search can act on; other errors stay what they are.
fn timed_out(e: sea_orm::DbErr) -> StoreError {
    // PostgreSQL's query_canceled (57014) reaches us as text only through sea-orm.
    if e.to_string().contains("statement timeout") {
        StoreError::Invalid(format!(
            "the search took longer than {} s; add a word, or filter by status, assignee, tag or customer",
            SEARCH_TIMEOUT.as_secs()
        ))
    } else {
        e.into()
    }
}

/// A document to index: its id (a message's, or a thread's for the thread's subject), its
/// thread, and its folded text.
pub(crate) struct Doc {
    pub id: Uuid,
    pub thread_id: Uuid,
    pub text: String,
}

impl Doc {
    /// A message's document: its subject and text.
    pub fn message(id: Uuid, thread_id: Uuid, subject: &str, text: Option<&str>) -> Doc {
        Doc {
            id,
            thread_id,
            text: message_text(subject, text),
        }
    }

    /// The document of a new thread's subject, when the message it opens with (if any)
    /// does not carry it already.
    pub fn thread_subject(
        thread_id: Uuid,
        subject: &str,
        first_message_subject: Option<&str>,
    ) -> Option<Doc> {
        subject_needs_own_doc(subject, first_message_subject).then(|| Doc {
            id: thread_id,
            thread_id,
            text: fold(subject),
        })
    }
}

/// Documents a statement: three parameters each on SQLite.
const DOCS_PER_STATEMENT: usize = 1000;

/// Bytes of folded text a statement carries at most (a batch of long mails is split).
const BYTES_PER_STATEMENT: usize = 8 << 20;

/// Writes `docs` to `search_docs`, in as few statements as the limits allow.
pub(crate) async fn index_docs(db: &impl ConnectionTrait, docs: &[Doc]) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    for chunk in chunks(docs, |d| d.text.len()) {
        let stmt = match backend {
            DbBackend::Postgres => {
                let mut rows = super::bulk::JsonRows::with_capacity(chunk.len());
                for d in chunk {
                    rows.start_row();
                    json_field(&mut rows, "id", Value::from(d.id))?;
                    json_field(&mut rows, "thread_id", Value::from(d.thread_id))?;
                    json_field(&mut rows, "body", Value::from(d.text.as_str()))?;
                }
                Statement::from_sql_and_values(
                    backend,
                    "INSERT INTO search_docs (id, thread_id, tsv) \
                     SELECT r.id, r.thread_id, to_tsvector('simple', r.body) \
                     FROM jsonb_to_recordset(CAST($1 AS jsonb)) AS r(id uuid, thread_id uuid, body text)",
                    [Value::from(rows.finish()?)],
                )
            }
            _ => {
                let mut values = Vec::with_capacity(chunk.len() * 3);
                for d in chunk {
                    values.push(Value::from(d.id));
                    values.push(Value::from(d.thread_id));
                    values.push(Value::from(d.text.as_str()));
                }
                Statement::from_sql_and_values(
                    backend,
                    format!(
                        "INSERT INTO search_docs (id, thread_id, body) VALUES {}",
                        vec!["(?, ?, ?)"; chunk.len()].join(", ")
                    ),
                    values,
                )
            }
        };
        db.execute_raw(stmt).await?;
    }
    Ok(())
}

/// A contact's or customer's document: its id, and its name with its address or external
/// id.
pub(crate) struct Party<'a> {
    pub id: Uuid,
    pub name: Option<&'a str>,
    pub key: &'a str,
}

/// Writes the documents of `parties`, replacing any they had (a renamed contact is found by
/// its new name only).
pub(crate) async fn index_parties(
    db: &impl ConnectionTrait,
    parties: &[Party<'_>],
) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    let docs: Vec<(Uuid, String)> = parties
        .iter()
        .map(|p| (p.id, party_text(p.name, p.key)))
        .collect();
    for chunk in chunks(&docs, |(_, t)| t.len()) {
        match backend {
            DbBackend::Postgres => {
                let mut rows = super::bulk::JsonRows::with_capacity(chunk.len());
                for (id, text) in chunk {
                    rows.start_row();
                    json_field(&mut rows, "id", Value::from(*id))?;
                    json_field(&mut rows, "body", Value::from(text.as_str()))?;
                }
                db.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "INSERT INTO search_parties (id, tsv) \
                     SELECT r.id, to_tsvector('simple', r.body) \
                     FROM jsonb_to_recordset(CAST($1 AS jsonb)) AS r(id uuid, body text) \
                     ON CONFLICT (id) DO UPDATE SET tsv = excluded.tsv",
                    [Value::from(rows.finish()?)],
                ))
                .await?;
            }
            _ => {
                // FTS5 has no upsert; its `id` is unindexed, so this reads the table, which
                // on SQLite (a small installation) holds only contacts and customers.
                let ids: Vec<Value> = chunk.iter().map(|(id, _)| Value::from(*id)).collect();
                db.execute_raw(Statement::from_sql_and_values(
                    backend,
                    format!(
                        "DELETE FROM search_parties WHERE id IN ({})",
                        vec!["?"; ids.len()].join(", ")
                    ),
                    ids,
                ))
                .await?;
                let mut values = Vec::with_capacity(chunk.len() * 2);
                for (id, text) in chunk {
                    values.push(Value::from(*id));
                    values.push(Value::from(text.as_str()));
                }
                db.execute_raw(Statement::from_sql_and_values(
                    backend,
                    format!(
                        "INSERT INTO search_parties (id, body) VALUES {}",
                        vec!["(?, ?)"; chunk.len()].join(", ")
                    ),
                    values,
                ))
                .await?;
            }
        }
    }
    Ok(())
}

/// Adds a field to a JSON row (ids and text always fit the JSON form).
fn json_field(
    rows: &mut super::bulk::JsonRows,
    name: &str,
    value: Value,
) -> Result<(), StoreError> {
    if rows.field(name, &value) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a search document's {name} cannot be sent as JSON"
        )))
    }
}

/// `items` in runs of at most [`DOCS_PER_STATEMENT`] items and [`BYTES_PER_STATEMENT`]
/// bytes (`size` of each; a larger item is a run of its own).
fn chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start == DOCS_PER_STATEMENT || bytes + n > BYTES_PER_STATEMENT) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_words_phrases_and_refuses_what_has_no_word() {
        let q = parse(r#"Café  "Printer on FIRE" e-mail café"#).unwrap();
        assert_eq!(q.terms(), ["cafe", "printer on fire", "e mail"]);
        assert_eq!(
            parse(r#"unclosed "two words"#).unwrap().terms(),
            ["unclosed", "two words"]
        );
        assert_eq!(parse(" \"\" * - ( ) %_ "), Err(SearchError::Empty));
        assert_eq!(parse(""), Err(SearchError::Empty));
        assert!(matches!(
            parse(&"a".repeat(MAX_QUERY_CHARS + 1)),
            Err(SearchError::TooLong { .. })
        ));
        assert!(matches!(
            parse("a b c d e f g h i"),
            Err(SearchError::TooManyTerms { terms: 9, .. })
        ));
    }

    #[test]
    fn user_text_is_bound_never_spliced() {
        let q = parse(r#"x'; DROP TABLE threads; -- "NEAR(a b)" \ %"#).unwrap();
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            let stmt = threads::Entity::find()
                .filter(thread_condition(backend, &q))
                .build(backend);
            assert!(!stmt.sql.contains("drop"), "{}", stmt.sql);
            assert!(!stmt.sql.to_lowercase().contains("near"), "{}", stmt.sql);
        }
    }

    #[test]
    fn chunks_split_by_count_and_bytes() {
        let items = vec![1usize; 2500];
        let runs = chunks(&items, |_| 1);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let big = vec![BYTES_PER_STATEMENT / 2 + 1; 3];
        assert_eq!(chunks(&big, |n| *n).len(), 3);
    }
}

//! The read side: the inbox (filters, keyset pages, per-status counts), one thread with its
//! customers, allowed transitions and timers, its feed, and a customer's inbox.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ApiState;
use super::auth::Reader;
use super::cursor::Cursor;
use super::params::Params;
use super::problem::{Problem, ReadErrors};
use crate::store::inbox::{self, InboxFilter};
use crate::store::views::{CustomerDetail, FeedItem, ThreadCard};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/threads", get(list))
        .route(
            "/api/v1/threads/{id}",
            get(detail).patch(super::writes::update_thread),
        )
        .route("/api/v1/threads/{id}/feed", get(feed))
        .route(
            "/api/v1/customers/{external_id}/threads",
            get(customer_inbox),
        )
}

/// The query parameters of the inbox, as documented; [`LIST_PARAMS`] is what the parser
/// accepts, and a test holds the two equal.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct InboxQuery {
    /// Any of these statuses (repeat the parameter or separate with commas).
    #[param(style = Form, explode, inline)]
    status: Option<Vec<StatusName>>,
    /// Threads assigned to this agent id.
    #[param(max_length = 200)]
    assignee: Option<String>,
    /// Only threads nobody is assigned to.
    unassigned: Option<bool>,
    /// Threads carrying every one of these tags (at most 20).
    #[param(style = Form, explode, value_type = Option<Vec<super::writes::Word>>, max_items = 20)]
    tag: Option<Vec<String>>,
    /// A customer's external id.
    #[param(max_length = 200)]
    customer: Option<String>,
    /// A contact's email address or chat id: threads it wrote in, or of its customers.
    #[param(max_length = 320)]
    contact: Option<String>,
    has_attachments: Option<bool>,
    /// Updated strictly after this time (RFC 3339).
    updated_after: Option<DateTime<Utc>>,
    /// Updated strictly before this time (RFC 3339).
    updated_before: Option<DateTime<Utc>>,
    /// The lifecycle's name.
    #[param(max_length = 100)]
    lifecycle: Option<String>,
    /// Keywords (at most 8 words or "quoted phrases"): every one must match the thread's
    /// subject, a message's subject or text, its contact's name or address, or a customer's
    /// name or external id; accents and case do not matter. Sorted by update, not rank.
    #[param(max_length = 256)]
    q: Option<String>,
    /// Cards a page (1 to 200).
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Also return the number of matching threads per status (every other filter applied).
    counts: Option<bool>,
}

/// The inbox's parameters, as the parser accepts them.
pub const LIST_PARAMS: &[&str] = &[
    "status",
    "assignee",
    "unassigned",
    "tag",
    "customer",
    "contact",
    "has_attachments",
    "updated_after",
    "updated_before",
    "lifecycle",
    "q",
    "limit",
    "cursor",
    "counts",
];

/// A thread status.
#[derive(Debug, ToSchema, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    Open,
    Waiting,
    Reminder,
    Closed,
}

/// One page of thread cards, newest update first.
#[derive(Serialize, ToSchema)]
pub struct ThreadPage {
    pub items: Vec<ThreadCard>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
    /// With `counts=true`: matching threads per status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, u64>>,
}

/// A thread with what its page shows beside the feed.
#[derive(Serialize, ToSchema)]
pub struct ThreadDetail {
    pub thread: ThreadCard,
    pub customers: Vec<CustomerDetail>,
    /// Statuses an agent may set now (`PATCH` with `status`), from the thread's lifecycle.
    pub transitions: Vec<String>,
    /// Lifecycle events that apply now (`PATCH` with `event`).
    pub events: Vec<String>,
    /// Pending timers (the next reminder), soonest first.
    pub timers: Vec<TimerItem>,
}

#[derive(Serialize, ToSchema)]
pub struct TimerItem {
    pub id: Uuid,
    /// The reminder ladder's step the timer fires.
    pub step: i32,
    pub due_at: DateTime<Utc>,
}

/// One page of a thread's feed, oldest first.
#[derive(Serialize, ToSchema)]
pub struct FeedPage {
    pub items: Vec<FeedItem>,
    pub next_cursor: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// Items a page (1 to 200).
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const PAGE_PARAMS: &[&str] = &["limit", "cursor"];

#[utoipa::path(
    get, path = "/api/v1/threads", tag = "threads",
    params(InboxQuery),
    responses(
        (status = 200, description = "A page of thread cards", body = ThreadPage),
        ReadErrors,
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(s): State<ApiState>,
    _: Reader,
    RawQuery(q): RawQuery,
) -> Result<Json<ThreadPage>, Problem> {
    let p = Params::parse(q.as_deref(), LIST_PARAMS)?;
    let (filter, counts) = inbox_filter(&p)?;
    page(&s, filter, counts).await.map(Json)
}

#[utoipa::path(
    get, path = "/api/v1/customers/{external_id}/threads", tag = "threads",
    params(
        ("external_id" = String, Path, min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$", description = "The customer's external id"),
        InboxQuery,
    ),
    responses(
        (status = 200, description = "The customer's threads", body = ThreadPage),
        ReadErrors,
    ),
    security(("api_key" = []))
)]
pub async fn customer_inbox(
    State(s): State<ApiState>,
    _: Reader,
    Path(external_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<ThreadPage>, Problem> {
    let p = Params::parse(q.as_deref(), LIST_PARAMS)?;
    let (mut filter, counts) = inbox_filter(&p)?;
    if filter.customer.is_some() {
        return Err(Problem::invalid(
            "customer",
            "the customer is in the path; leave out `customer`",
        ));
    }
    let external_id = external_id_in_path(external_id)?;
    if !inbox::customer_exists(s.store.conn(), &external_id).await? {
        return Err(Problem::not_found(format!(
            "no customer with external id {:?}",
            crate::text::escape_controls(&external_id)
        )));
    }
    filter.customer = Some(external_id);
    page(&s, filter, counts).await.map(Json)
}

#[utoipa::path(
    get, path = "/api/v1/threads/{id}", tag = "threads",
    params(("id" = Uuid, Path, description = "The thread's id")),
    responses(
        (status = 200, description = "The thread", body = ThreadDetail),
        ReadErrors,
    ),
    security(("api_key" = []))
)]
pub async fn detail(
    State(s): State<ApiState>,
    _: Reader,
    Path(id): Path<String>,
) -> Result<Json<ThreadDetail>, Problem> {
    let id = thread_id(&id)?;
    let db = s.store.conn();
    let Some(mut card) = inbox::thread_card(db, id).await? else {
        return Err(no_thread(id));
    };
    s.colour(std::slice::from_mut(&mut card));
    let customers = inbox::thread_customers(db, id).await?;
    let timers = crate::store::timers::pending_for_thread(db, id)
        .await?
        .into_iter()
        .map(|t| TimerItem {
            id: t.id,
            step: t.step,
            due_at: t.due_at,
        })
        .collect();
    let (transitions, events) = s.moves(&card);
    Ok(Json(ThreadDetail {
        thread: card,
        customers,
        transitions,
        events,
        timers,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/threads/{id}/feed", tag = "threads",
    params(("id" = Uuid, Path, description = "The thread's id"), PageQuery),
    responses(
        (status = 200, description = "Messages, comments and events in time order", body = FeedPage),
        ReadErrors,
    ),
    security(("api_key" = []))
)]
pub async fn feed(
    State(s): State<ApiState>,
    _: Reader,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<FeedPage>, Problem> {
    let id = thread_id(&id)?;
    let p = Params::parse(q.as_deref(), PAGE_PARAMS)?;
    let limit = p.int("limit", 1, 200, 50)?;
    let after = cursor(&p)?;
    let db = s.store.conn();
    if inbox::thread_card(db, id).await?.is_none() {
        return Err(no_thread(id));
    }
    let mut items = inbox::feed_page(db, id, after.map(|c| (c.at, c.id)), Some(limit + 1)).await?;
    let next_cursor = next(&mut items, limit, |i| Cursor {
        at: i.at(),
        id: i.id(),
    });
    Ok(Json(FeedPage { items, next_cursor }))
}

/// One page of cards for `filter`, with the next cursor and, if asked, the counts.
async fn page(s: &ApiState, mut filter: InboxFilter, counts: bool) -> Result<ThreadPage, Problem> {
    let db = s.store.conn();
    let limit = filter.limit;
    filter.limit = limit + 1;
    // Only a search can be refused here (it took too long): the fix is in `q`.
    let mut items = inbox::list_threads(db, &filter)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Invalid(m) => Problem::invalid("q", m),
            e => e.into(),
        })?;
    let next_cursor = next(&mut items, limit, |c| Cursor {
        at: c.updated_at,
        id: c.id,
    });
    s.colour(&mut items);
    let counts = if counts {
        Some(inbox::count_by_status(db, &filter).await?)
    } else {
        None
    };
    Ok(ThreadPage {
        items,
        next_cursor,
        counts,
    })
}

/// Trims a page read with one item too many and says where the next one starts.
fn next<T>(items: &mut Vec<T>, limit: u64, key: impl Fn(&T) -> Cursor) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().map(|i| key(i).encode())
}

fn inbox_filter(p: &Params) -> Result<(InboxFilter, bool), Problem> {
    let mut statuses = Vec::new();
    for s in p.list("status") {
        statuses.push(crate::lifecycle::parse_status(s).ok_or_else(|| {
            Problem::invalid(
                "status",
                format!(
                    "unknown status {:?}; expected one of {}",
                    crate::text::escape_controls(s),
                    crate::contract::STATUSES.join(", ")
                ),
            )
        })?);
    }
    let tags: Vec<String> = p.list("tag").into_iter().map(str::to_owned).collect();
    if tags.len() > 20 || tags.iter().any(|t| t.chars().count() > 200) {
        return Err(Problem::invalid(
            "tag",
            "at most 20 tags of at most 200 characters each",
        ));
    }
    // Together, `unassigned=true` and `assignee` match nothing, as filters combine with AND.
    let unassigned = p.bool("unassigned")?.unwrap_or(false);
    let assignee = p.text("assignee", 200)?.map(str::to_owned);
    let search = match p.text("q", crate::store::search::MAX_QUERY_CHARS)? {
        None => None,
        Some(q) => {
            Some(crate::store::search::parse(q).map_err(|e| Problem::invalid("q", e.to_string()))?)
        }
    };
    let filter = InboxFilter {
        statuses,
        assignee,
        unassigned,
        tags,
        customer: p.text("customer", 200)?.map(str::to_owned),
        contact: p.text("contact", 320)?.map(str::to_owned),
        has_attachments: p.bool("has_attachments")?,
        updated_after: p.time("updated_after")?,
        updated_before: p.time("updated_before")?,
        lifecycle: p.text("lifecycle", 100)?.map(str::to_owned),
        search,
        after: cursor(p)?.map(|c| (c.at, c.id)),
        limit: p.int("limit", 1, 200, 50)?,
    };
    Ok((filter, p.bool("counts")?.unwrap_or(false)))
}

fn cursor(p: &Params) -> Result<Option<Cursor>, Problem> {
    match p.one("cursor")? {
        None => Ok(None),
        Some(c) => Cursor::decode(c).map(Some).ok_or_else(|| {
            Problem::invalid(
                "cursor",
                "not a cursor this API handed out; pass a page's `next_cursor` as it is",
            )
        }),
    }
}

/// A thread id from the path.
pub fn thread_id(s: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(s).map_err(|_| {
        Problem::invalid(
            "id",
            format!(
                "{:?} is not a thread id (a UUID)",
                crate::text::escape_controls(s)
            ),
        )
    })
}

/// A customer's external id from the path: 1 to 200 characters, no control characters (a
/// NUL could not even be stored, and an id is never meant to hold one).
pub fn external_id_in_path(id: String) -> Result<String, Problem> {
    if id.is_empty() || id.chars().count() > 200 || id.chars().any(char::is_control) {
        return Err(Problem::invalid(
            "external_id",
            "a customer's external id is 1 to 200 characters without control characters",
        ));
    }
    Ok(id)
}

pub fn no_thread(id: Uuid) -> Problem {
    Problem::not_found(format!("no thread {id}"))
}

impl ApiState {
    /// Fills each card's status colour from its lifecycle.
    pub fn colour(&self, cards: &mut [ThreadCard]) {
        self.lifecycles().colour(cards);
    }

    /// The statuses an agent may set and the events that apply, from the card's status.
    fn moves(&self, card: &ThreadCard) -> (Vec<String>, Vec<String>) {
        let lifecycles = self.lifecycles();
        let (Some(l), Some(status)) = (
            lifecycles.for_thread(&card.lifecycle),
            crate::lifecycle::parse_status(&card.status),
        ) else {
            return (Vec::new(), Vec::new());
        };
        let transitions = l
            .transitions
            .get(&status)
            .into_iter()
            .flatten()
            .map(|s| crate::lifecycle::status_name(*s).to_owned())
            .collect();
        let events = l
            .events
            .iter()
            .filter(|(_, rule)| rule.from.contains(&status))
            .map(|(name, _)| name.clone())
            .collect();
        (transitions, events)
    }
}

//! The write side. Each write becomes the contract's job, validated against the job's JSON
//! Schema and published with confirms, exactly as `gochat publish` would: the worker stays
//! the only writer, and a write is answered `202 Accepted` once the broker holds the job.
//!
//! `Idempotency-Key: K` makes the job's AMQP `message_id` `api-<key id>-K` (scoped by API
//! key, so two tools choosing the same K cannot cancel each other), and a retried request
//! has one effect. `?wait=5s` waits until the worker committed the job and answers `200`
//! with the result, so a UI reads its own write; past the wait it is still `202`.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ApiState;
use super::auth::Writer;
use super::body::Body;
use super::params::Params;
use super::problem::{Problem, WriteErrors};
use super::threads::{no_thread, thread_id};
use crate::queue::Outgoing;
use crate::store::api_keys::KeyInfo;
use crate::store::inbox;
use crate::store::views::{MessageItem, ThreadCard};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/threads/{id}/messages", post(reply))
        .route("/api/v1/threads/{id}/comments", post(comment))
        .route("/api/v1/customers/{external_id}", put(upsert_customer))
}

/// The agent on whose behalf a tool writes (recorded in the feed's audit).
#[derive(Debug, Deserialize, ToSchema)]
pub struct Agent {
    /// The agent's id in Algoreg.
    #[schema(min_length = 1, max_length = 200)]
    pub id: String,
    /// Display name, shown in the feed.
    #[schema(max_length = 200)]
    pub name: Option<String>,
}

/// A literal body: a subject (default: the thread's, with `Re:`) and text and/or HTML.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct MessageBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AttachmentIn {
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The file's bytes, base64.
    pub content_base64: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutboundKind {
    Reply,
    Notification,
}

/// An agent's reply: either `body` or `template` (with `variables`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReplyRequest {
    pub author: Agent,
    /// Addresses or contact ids of the thread's customers; default: the thread's contact.
    #[schema(min_items = 1)]
    pub to: Option<Vec<String>>,
    pub cc: Option<Vec<String>>,
    pub body: Option<MessageBody>,
    /// A template name from the workflows folder.
    #[schema(min_length = 1)]
    pub template: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Map<String, Value>>,
    /// BCP 47 language of the template; default the contact's.
    pub language: Option<String>,
    pub kind: Option<OutboundKind>,
    pub attachments: Option<Vec<AttachmentIn>>,
}

/// An internal comment: agents see it, the customer never does.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CommentRequest {
    pub author: Agent,
    /// The note; it must have some text that is not white space.
    #[schema(min_length = 1, max_length = 100000, pattern = "\\S")]
    pub body: String,
}

/// A change to a thread; each part applies only when present.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ThreadPatch {
    pub actor: Agent,
    /// Set this status (the lifecycle must allow it from the current one).
    pub status: Option<super::threads::StatusName>,
    /// Or feed the lifecycle this event (e.g. `agent_replied`).
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub event: Option<String>,
    /// Why, recorded in the audit.
    pub reason: Option<String>,
    /// An agent id, or `null` to unassign; leave out to keep.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub assignee: Option<Option<String>>,
    #[schema(inline, value_type = Option<Vec<Word>>)]
    pub tags_add: Option<Vec<String>>,
    #[schema(inline, value_type = Option<Vec<Word>>)]
    pub tags_remove: Option<Vec<String>>,
    /// External ids: the thread's customers become exactly these.
    #[schema(inline, value_type = Option<Vec<Word>>, min_items = 1)]
    pub customers_set: Option<Vec<String>>,
}

/// A tag or an external id: 1 to 200 characters.
#[derive(ToSchema)]
#[schema(min_length = 1, max_length = 200)]
#[allow(dead_code)]
pub struct Word(String);

/// `"assignee": null` (unassign) differs from no `assignee` (keep): `Some(None)` and `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ContactIn {
    pub kind: ContactKind,
    #[schema(min_length = 1)]
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// The channel of a contact.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContactKind {
    Email,
    Chat,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CustomerRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub contacts: Option<Vec<ContactIn>>,
    /// Detach contacts not listed (default: only add).
    pub replace_contacts: Option<bool>,
}

/// A job the write published.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobRef {
    /// The job's AMQP `message_id`.
    pub id: String,
    pub kind: String,
    /// `queued` (the broker holds it) or `done` (the worker committed it).
    pub state: String,
}

/// What a write answers: its jobs and, once they are done, what they made.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteResult {
    pub jobs: Vec<JobRef>,
    /// The thread as it is after the jobs (with `wait`, once done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadCard>,
    /// The message a reply made (with `wait`, once done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageItem>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WaitQuery {
    /// Wait up to this long (e.g. `5s` or `500ms`; at most `api.max_wait`, 10 s by default)
    /// for the worker to commit.
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,6}(s|ms)$")]
    wait: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct WriteHeaders {
    /// Makes a retried request have one effect (1 to 200 visible ASCII characters).
    #[param(rename = "Idempotency-Key", value_type = String, required = false, pattern = "^[!-~]{1,200}$")]
    idempotency_key: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatchHeader {
    /// The thread's `version` the change was made against (`7`, `"7"` or `W/"7"`); the
    /// change is refused with 412 if the thread moved on.
    #[param(rename = "If-Match", value_type = String, required = false, pattern = r#"^(W/)?"?[0-9]{1,18}"?$"#)]
    if_match: Option<String>,
}

#[utoipa::path(
    post, path = "/api/v1/threads/{id}/messages", tag = "writes",
    params(("id" = Uuid, Path, description = "The thread's id"), WaitQuery, WriteHeaders),
    request_body = ReplyRequest,
    responses(
        (status = 200, description = "Sent to the worker and committed (with `wait`)", body = WriteResult),
        (status = 202, description = "Queued", body = WriteResult),
        WriteErrors,
    ),
    security(("api_key" = []))
)]
pub async fn reply(
    State(s): State<ApiState>,
    Writer(key): Writer,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    Body(req): Body<ReplyRequest>,
) -> Result<Response, Problem> {
    let id = thread_id(&id)?;
    let wait = wait(&s, q.as_deref())?;
    idempotency(&headers)?;
    req.author.check("body.author")?;
    for (i, a) in req.attachments.iter().flatten().enumerate() {
        check_len(&format!("body.attachments[{i}].name"), &a.name, 1, 255)?;
    }
    let Some(card) = inbox::thread_card(s.store.conn(), id).await? else {
        return Err(no_thread(id));
    };
    let to = match req.to {
        Some(to) => to,
        None => vec![
            card.contact
                .as_ref()
                .map(|c| c.address.clone())
                .ok_or_else(|| {
                    Problem::unprocessable(
                        Some("body.to".into()),
                        "the thread has no contact yet; give `to`",
                    )
                })?,
        ],
    };
    let mut m = map(json!({
        "schema": "outbound-message/v1",
        "thread_id": id,
        "author": agent(&req.author),
        "to": to,
    }));
    let m = &mut m;
    put_some(m, "cc", req.cc.map(|v| json!(v)));
    put_some(
        m,
        "body",
        req.body.map(|mut b| {
            b.subject
                .get_or_insert_with(|| reply_subject(&card.subject));
            json!(b)
        }),
    );
    put_some(m, "template", req.template.map(Value::String));
    put_some(m, "variables", req.variables.map(Value::Object));
    put_some(m, "language", req.language.map(Value::String));
    put_some(m, "kind", req.kind.map(|k| json!(k)));
    put_some(m, "attachments", req.attachments.map(|a| json!(a)));
    let p = Value::Object(std::mem::take(m));
    let jobs = publish(&s, &key, &headers, vec![("outbound-message", "", p)]).await?;
    finish(&s, id, jobs, wait, true).await
}

#[utoipa::path(
    post, path = "/api/v1/threads/{id}/comments", tag = "writes",
    params(("id" = Uuid, Path, description = "The thread's id"), WaitQuery, WriteHeaders),
    request_body = CommentRequest,
    responses(
        (status = 200, description = "Committed (with `wait`)", body = WriteResult),
        (status = 202, description = "Queued", body = WriteResult),
        WriteErrors,
    ),
    security(("api_key" = []))
)]
pub async fn comment(
    State(s): State<ApiState>,
    Writer(key): Writer,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    Body(req): Body<CommentRequest>,
) -> Result<Response, Problem> {
    let id = thread_id(&id)?;
    let wait = wait(&s, q.as_deref())?;
    idempotency(&headers)?;
    req.author.check("body.author")?;
    check_len("body.body", &req.body, 1, 100_000)?;
    if req.body.trim().is_empty() {
        return Err(Problem::unprocessable(
            Some("body.body".into()),
            "a comment needs some text",
        ));
    }
    if inbox::thread_card(s.store.conn(), id).await?.is_none() {
        return Err(no_thread(id));
    }
    let p = json!({
        "schema": "thread-update/v1",
        "thread_id": id,
        "actor": agent(&req.author),
        "comment": req.body,
    });
    let jobs = publish(&s, &key, &headers, vec![("thread-update", "", p)]).await?;
    finish(&s, id, jobs, wait, false).await
}

#[utoipa::path(
    patch, path = "/api/v1/threads/{id}", tag = "writes",
    params(
        ("id" = Uuid, Path, description = "The thread's id"),
        IfMatchHeader, WaitQuery, WriteHeaders,
    ),
    request_body = ThreadPatch,
    responses(
        (status = 200, description = "Committed (with `wait`)", body = WriteResult),
        (status = 202, description = "Queued", body = WriteResult),
        (status = 412, description = "The thread changed since that version", body = Problem, content_type = "application/problem+json"),
        WriteErrors,
    ),
    security(("api_key" = []))
)]
pub async fn update_thread(
    State(s): State<ApiState>,
    Writer(key): Writer,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    Body(req): Body<ThreadPatch>,
) -> Result<Response, Problem> {
    let id = thread_id(&id)?;
    let wait = wait(&s, q.as_deref())?;
    idempotency(&headers)?;
    let expected = if_match(&headers)?;
    req.actor.check("body.actor")?;
    for (field, list) in [
        ("tags_add", &req.tags_add),
        ("tags_remove", &req.tags_remove),
        ("customers_set", &req.customers_set),
    ] {
        for (i, w) in list.iter().flatten().enumerate() {
            check_len(&format!("body.{field}[{i}]"), w, 1, 200)?;
        }
    }
    if req.status.is_some() && req.event.is_some() {
        return Err(Problem::unprocessable(
            Some("body.event".into()),
            "give `status` or `event`, not both",
        ));
    }
    let actor = agent(&req.actor);
    let mut u = map(json!({"schema": "thread-update/v1", "thread_id": id, "actor": actor}));
    let u = &mut u;
    if let Some(a) = req.assignee {
        u.insert("assignee".into(), json!(a));
    }
    put_some(u, "tags_add", req.tags_add.map(|v| json!(v)));
    put_some(u, "tags_remove", req.tags_remove.map(|v| json!(v)));
    put_some(u, "customers_set", req.customers_set.map(|v| json!(v)));
    let has_update = u.len() > 3;
    let mut jobs = Vec::new();
    if has_update {
        jobs.push(("thread-update", "update", Value::Object(std::mem::take(u))));
    }
    if req.status.is_some() || req.event.is_some() {
        let mut t = map(json!({"schema": "status-transition/v1", "thread_id": id, "actor": actor}));
        let m = &mut t;
        put_some(m, "to", req.status.map(|st| json!(st)));
        put_some(m, "event", req.event.map(Value::String));
        put_some(m, "reason", req.reason.map(Value::String));
        // Alone, the transition carries the version, so the worker refuses it too if the
        // thread moves on between this check and the job; beside an update (which bumps
        // the version itself) the check above is the guard.
        if !has_update && let Some(v) = expected {
            m.insert("expected_version".into(), json!(v));
        }
        jobs.push(("status-transition", "status", Value::Object(t)));
    }
    if jobs.is_empty() {
        return Err(Problem::unprocessable(
            None,
            "nothing to change: give status, event, assignee, tags_add, tags_remove or customers_set",
        ));
    }
    if jobs.len() == 1 {
        jobs[0].1 = "";
    }
    // The body is judged before the thread's state: a bad request is a 422 whatever the
    // version.
    check_jobs(&jobs)?;
    let Some(card) = inbox::thread_card(s.store.conn(), id).await? else {
        return Err(no_thread(id));
    };
    if let Some(v) = expected
        && v != card.version
    {
        return Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "thread {id} is at version {}, not {v}: it changed meanwhile; read it again",
                card.version
            ),
        ));
    }
    let jobs = publish(&s, &key, &headers, jobs).await?;
    finish(&s, id, jobs, wait, false).await
}

#[utoipa::path(
    put, path = "/api/v1/customers/{external_id}", tag = "writes",
    params(("external_id" = String, Path, min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$", description = "The customer's id across Algoreg"), WaitQuery, WriteHeaders),
    request_body = CustomerRequest,
    responses(
        (status = 200, description = "Committed (with `wait`)", body = WriteResult),
        (status = 202, description = "Queued", body = WriteResult),
        WriteErrors,
    ),
    security(("api_key" = []))
)]
pub async fn upsert_customer(
    State(s): State<ApiState>,
    Writer(key): Writer,
    Path(external_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    Body(req): Body<CustomerRequest>,
) -> Result<Response, Problem> {
    let external_id = super::threads::external_id_in_path(external_id)?;
    let wait = wait(&s, q.as_deref())?;
    idempotency(&headers)?;
    check_len("body.name", &req.name, 1, 200)?;
    let mut m = map(json!({
        "schema": "customer-upsert/v1",
        "external_id": external_id,
        "name": req.name,
    }));
    put_some(&mut m, "contacts", req.contacts.map(|c| json!(c)));
    put_some(
        &mut m,
        "replace_contacts",
        req.replace_contacts.map(Value::Bool),
    );
    let p = Value::Object(m);
    let jobs = publish(&s, &key, &headers, vec![("customer-upsert", "", p)]).await?;
    let done = wait_done(&s, &jobs, wait).await?;
    Ok(answer(jobs, done, None, None))
}

/// `Re: <subject>`, unless it already reads so.
fn reply_subject(subject: &str) -> String {
    if subject
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"))
    {
        subject.to_owned()
    } else {
        format!("Re: {subject}")
    }
}

/// A text's length in characters is within `min..=max`, or a 422 naming `field`.
fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), Problem> {
    let n = value.chars().count();
    if (min..=max).contains(&n) {
        return Ok(());
    }
    Err(Problem::unprocessable(
        Some(field.into()),
        format!("{field} must be {min} to {max} characters long, found {n}"),
    ))
}

impl Agent {
    fn check(&self, field: &str) -> Result<(), Problem> {
        check_len(&format!("{field}.id"), &self.id, 1, 200)?;
        if let Some(n) = &self.name {
            check_len(&format!("{field}.name"), n, 0, 200)?;
        }
        Ok(())
    }
}

/// `{"kind": "agent", "id", "name"}`.
fn agent(a: &Agent) -> Value {
    let mut m = map(json!({"kind": "agent", "id": a.id}));
    put_some(&mut m, "name", a.name.clone().map(Value::String));
    Value::Object(m)
}

/// The map of a `json!({...})` object literal.
fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn put_some(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}

/// `?wait=5s` or `?wait=500ms`; a longer wait than `api.max_wait` waits that long.
fn wait(s: &ApiState, q: Option<&str>) -> Result<Option<Duration>, Problem> {
    let p = Params::parse(q, &["wait"])?;
    let Some(w) = p.one("wait")? else {
        return Ok(None);
    };
    let (digits, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len()));
    let n: u64 = match digits.parse() {
        Ok(n) if digits.len() <= 6 => n,
        _ => 0,
    };
    let d = match unit {
        "s" if !digits.is_empty() => Duration::from_secs(n),
        "ms" if !digits.is_empty() => Duration::from_millis(n),
        _ => {
            return Err(Problem::invalid(
                "wait",
                "`wait` must be a number of seconds or milliseconds such as 5s or 500ms",
            ));
        }
    };
    Ok(Some(d.min(s.config.max_wait)))
}

/// `If-Match: 7`, `"7"` or `W/"7"`.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse().map(Some).map_err(|_| {
        Problem::invalid(
            "If-Match",
            "If-Match must be the thread's `version`, e.g. If-Match: \"7\"",
        )
    })
}

/// The `Idempotency-Key` header, checked; handlers read it before anything else can refuse
/// the request, so a bad key is always the answer to a bad key.
fn idempotency(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v.to_str().unwrap_or("");
    if k.is_empty() || k.len() > 200 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::invalid(
            "Idempotency-Key",
            "the Idempotency-Key must be 1 to 200 visible ASCII characters",
        ));
    }
    Ok(Some(k))
}

/// Every payload against its job's JSON Schema.
fn check_jobs(jobs: &[(&str, &str, Value)]) -> Result<(), Problem> {
    for (kind, _, payload) in jobs {
        crate::jobs::check_payload(kind, payload).map_err(|e| {
            Problem::unprocessable(
                None,
                format!("the request makes an invalid {kind} job: {e}"),
            )
        })?;
    }
    Ok(())
}

/// Validates every payload against its job's schema, then publishes them all with confirms.
/// `jobs` are (kind, id suffix, payload); the suffix tells apart several jobs of one request.
async fn publish(
    s: &ApiState,
    key: &KeyInfo,
    headers: &HeaderMap,
    jobs: Vec<(&str, &str, Value)>,
) -> Result<Vec<JobRef>, Problem> {
    let base = match idempotency(headers)? {
        None => Uuid::now_v7().to_string(),
        Some(k) => format!("api-{}-{k}", key.id.simple()),
    };
    let mut out = Vec::with_capacity(jobs.len());
    let mut msgs = Vec::with_capacity(jobs.len());
    for (kind, suffix, payload) in jobs {
        crate::jobs::check_payload(kind, &payload).map_err(|e| {
            Problem::unprocessable(
                None,
                format!("the request makes an invalid {kind} job: {e}"),
            )
        })?;
        let id = if suffix.is_empty() {
            base.clone()
        } else {
            format!("{base}:{suffix}")
        };
        msgs.push(Outgoing::json(
            s.jobs.names().jobs_exchange(),
            kind.to_owned(),
            id.clone(),
            payload.to_string().into_bytes(),
        ));
        out.push(JobRef {
            id,
            kind: kind.to_owned(),
            state: "queued".into(),
        });
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "API write not published");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the message queue did not take the job; retry (with the same Idempotency-Key)",
        )
    };
    let publisher = s.jobs.publisher().await.map_err(|e| unavailable(&e))?;
    for r in publisher.publish_all(&msgs).await {
        r.map_err(|e| unavailable(&e))?;
    }
    Ok(out)
}

/// After `wait`: the thread's card (and the reply's message) once every job is done.
async fn finish(
    s: &ApiState,
    thread: Uuid,
    jobs: Vec<JobRef>,
    wait: Option<Duration>,
    with_message: bool,
) -> Result<Response, Problem> {
    let done = wait_done(s, &jobs, wait).await?;
    if !done {
        return Ok(answer(jobs, false, None, None));
    }
    let db = s.store.conn();
    let mut card = inbox::thread_card(db, thread).await?;
    if let Some(c) = card.as_mut() {
        s.colour(std::slice::from_mut(c));
    }
    let message = match (with_message, jobs.first()) {
        (true, Some(j)) => inbox::message_by_job(db, &j.id).await?,
        _ => None,
    };
    Ok(answer(jobs, true, card, message))
}

/// Polls the database until every job is applied, one was dead-lettered (its reason, as a
/// 422: the job cannot be done as asked), or `wait` runs out.
async fn wait_done(s: &ApiState, jobs: &[JobRef], wait: Option<Duration>) -> Result<bool, Problem> {
    let Some(wait) = wait else {
        return Ok(false);
    };
    let deadline = tokio::time::Instant::now() + wait;
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let db = s.store.conn();
    loop {
        let done = crate::store::processed::which_processed(db, &ids).await?;
        if done.len() == ids.len() {
            return Ok(true);
        }
        let open: Vec<&str> = ids.iter().copied().filter(|i| !done.contains(*i)).collect();
        let dead = crate::store::processed::dead_reasons(db, &open).await?;
        if let Some((id, reason)) = dead.into_iter().next() {
            return Err(Problem::unprocessable(
                None,
                format!("job {id} was dead-lettered: {reason}"),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn answer(
    mut jobs: Vec<JobRef>,
    done: bool,
    thread: Option<ThreadCard>,
    message: Option<MessageItem>,
) -> Response {
    if done {
        for j in &mut jobs {
            j.state = "done".into();
        }
    }
    let status = if done {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (
        status,
        Json(WriteResult {
            jobs,
            thread,
            message,
        }),
    )
        .into_response()
}

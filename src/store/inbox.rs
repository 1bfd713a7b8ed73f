//! Read side of the inbox: thread cards (newest update first) and a thread's feed. Queries
//! are batched per page (one query per related table), never one per thread.

use std::collections::HashMap;

use gochat_entities::{
    attachments, comments, contacts, customer_contacts, customers, messages, thread_customers,
    thread_events, thread_tags, threads,
};
use sea_orm::{
    ActiveEnum, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::StoreError;
use super::views::{
    AttachmentItem, CommentItem, ContactRef, CustomerRef, EventItem, FeedItem, MessageItem,
    ThreadCard, ThreadView,
};

/// Which threads to list.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    pub status: Option<threads::ThreadStatus>,
    pub limit: u64,
}

/// Thread cards matching `filter`, most recently updated first.
pub async fn list_threads(
    db: &impl ConnectionTrait,
    filter: &InboxFilter,
) -> Result<Vec<ThreadCard>, StoreError> {
    let mut q = threads::Entity::find()
        .order_by_desc(threads::Column::UpdatedAt)
        .order_by_desc(threads::Column::Id);
    if let Some(s) = &filter.status {
        q = q.filter(threads::Column::Status.eq(*s));
    }
    let rows = q.limit(filter.limit.max(1)).all(db).await?;
    cards(db, rows).await
}

/// One thread with its feed in time order, or `None` if there is no such thread.
pub async fn thread_view(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<ThreadView>, StoreError> {
    let Some(thread) = threads::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let card = cards(db, vec![thread])
        .await?
        .pop()
        .ok_or(StoreError::NotFound {
            what: "thread",
            id: id.to_string(),
        })?;

    let msgs = messages::Entity::find()
        .filter(messages::Column::ThreadId.eq(id))
        .order_by_asc(messages::Column::CreatedAt)
        .all(db)
        .await?;
    let mut files: HashMap<Uuid, Vec<AttachmentItem>> = HashMap::new();
    if !msgs.is_empty() {
        for a in attachments::Entity::find()
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                attachments::Column::MessageId,
                msgs.iter().map(|m| m.id),
            ))
            .order_by_asc(attachments::Column::CreatedAt)
            .all(db)
            .await?
        {
            files.entry(a.message_id).or_default().push(AttachmentItem {
                name: a.name,
                content_type: a.content_type,
                size: a.size,
            });
        }
    }
    let mut feed: Vec<FeedItem> = msgs
        .into_iter()
        .map(|m| {
            FeedItem::Message(MessageItem {
                at: m.created_at,
                attachments: files.remove(&m.id).unwrap_or_default(),
                id: m.id,
                direction: m.direction.to_value(),
                channel: m.channel.to_value(),
                message_id: m.message_id_header,
                from: m.from_address,
                from_name: m.from_name,
                to: super::json_strings(&m.to_addresses),
                cc: super::json_strings(&m.cc_addresses),
                subject: m.subject,
                text: m.text_body,
                state: m.state.map(|s| s.to_value()),
                error: m.error,
                classification: m.classification.map(|c| c.to_value()),
                kind: m.kind.map(|k| k.to_value()),
            })
        })
        .collect();
    feed.extend(
        comments::Entity::find()
            .filter(comments::Column::ThreadId.eq(id))
            .all(db)
            .await?
            .into_iter()
            .map(|c| {
                FeedItem::Comment(CommentItem {
                    at: c.created_at,
                    id: c.id,
                    author: c.author,
                    body: c.body,
                })
            }),
    );
    feed.extend(
        thread_events::Entity::find()
            .filter(thread_events::Column::ThreadId.eq(id))
            .all(db)
            .await?
            .into_iter()
            .map(|e| {
                FeedItem::Event(EventItem {
                    at: e.at,
                    id: e.id,
                    kind: e.kind,
                    actor: e.actor,
                    before: e.before,
                    after: e.after,
                    detail: e.detail,
                })
            }),
    );
    // Equal times (one job writes several rows with the same clock reading) fall back to the
    // ids, which are UUID v7: time-ordered and monotonic, so the order of writing is kept.
    feed.sort_by_key(|item| (item.at(), item.id()));
    Ok(Some(ThreadView { thread: card, feed }))
}

/// Builds cards for `rows`, loading customers, tags and contacts in one query each.
async fn cards(
    db: &impl ConnectionTrait,
    rows: Vec<threads::Model>,
) -> Result<Vec<ThreadCard>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|t| t.id).collect();

    let mut customers_of: HashMap<Uuid, Vec<CustomerRef>> = HashMap::new();
    for (link, customer) in thread_customers::Entity::find()
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            thread_customers::Column::ThreadId,
            ids.clone(),
        ))
        .order_by_asc(thread_customers::Column::AddedAt)
        .find_also_related(customers::Entity)
        .all(db)
        .await?
    {
        if let Some(c) = customer {
            customers_of
                .entry(link.thread_id)
                .or_default()
                .push(CustomerRef {
                    id: c.id,
                    external_id: c.external_id,
                    name: c.name,
                });
        }
    }

    let mut tags_of: HashMap<Uuid, Vec<String>> = HashMap::new();
    for t in thread_tags::Entity::find()
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            thread_tags::Column::ThreadId,
            ids.clone(),
        ))
        .order_by_asc(thread_tags::Column::Tag)
        .all(db)
        .await?
    {
        tags_of.entry(t.thread_id).or_default().push(t.tag);
    }

    let contact_ids: Vec<Uuid> = rows.iter().filter_map(|t| t.contact_id).collect();
    let mut contact_by_id: HashMap<Uuid, contacts::Model> = HashMap::new();
    let mut customers_of_contact: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    if !contact_ids.is_empty() {
        for c in contacts::Entity::find()
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                contacts::Column::Id,
                contact_ids.clone(),
            ))
            .all(db)
            .await?
        {
            contact_by_id.insert(c.id, c);
        }
        for l in customer_contacts::Entity::find()
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                customer_contacts::Column::ContactId,
                contact_ids,
            ))
            .all(db)
            .await?
        {
            customers_of_contact
                .entry(l.contact_id)
                .or_default()
                .push(l.customer_id);
        }
    }

    Ok(rows
        .into_iter()
        .map(|t| {
            let customers = customers_of.remove(&t.id).unwrap_or_default();
            let contact = t
                .contact_id
                .and_then(|cid| contact_by_id.get(&cid))
                .map(|c| ContactRef {
                    name: c.display_name.clone(),
                    address: c.address.clone(),
                    external_id: customers_of_contact.get(&c.id).and_then(|owners| {
                        customers
                            .iter()
                            .find(|cu| owners.contains(&cu.id))
                            .map(|cu| cu.external_id.clone())
                    }),
                });
            ThreadCard {
                id: t.id,
                subject: t.subject,
                status: t.status.to_value(),
                status_colour: None,
                lifecycle: t.lifecycle,
                lifecycle_step: t.lifecycle_step,
                customers,
                contact,
                assignee: t.assignee,
                tags: tags_of.remove(&t.id).unwrap_or_default(),
                item_count: t.item_count,
                has_attachments: t.has_attachments,
                attachment_names: super::json_strings(&t.attachment_names),
                last_message_at: t.last_message_at,
                created_at: t.created_at,
                updated_at: t.updated_at,
                snippet: t.snippet,
                flags: super::json_strings(&t.flags),
                linked_thread_id: t.linked_thread_id,
                version: t.version,
            }
        })
        .collect())
}

//! Customers and their contacts: the upsert other tools (and ops) use to keep them in sync.

use chrono::{DateTime, Utc};
use gochat_entities::{contacts, customer_contacts, customers};
use sea_orm::sea_query::{Expr, Func, InsertStatement, OnConflict, Query};
use std::collections::{HashMap, HashSet};

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect,
};
use serde::Deserialize;
use uuid::Uuid;

use super::StoreError;
use super::search::Party;

/// A customer with the contacts to attach (the `customer-upsert` job's payload).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CustomerUpsert {
    pub external_id: String,
    pub name: String,
    #[serde(default)]
    pub contacts: Vec<ContactInput>,
    /// Detach the customer's contacts that are not listed (the contacts themselves stay:
    /// they may belong to other customers and their messages keep their sender).
    #[serde(default)]
    pub replace_contacts: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ContactInput {
    pub kind: contacts::ContactKind,
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    /// IANA time zone name; checked here, so a typo is refused with the job, not at send.
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    Updated,
}

/// The canonical form of an address, so one person is one contact: emails are trimmed and
/// lower-cased; chat ids are trimmed. Refuses what could smuggle a header (CR, LF).
pub fn normalise_address(kind: contacts::ContactKind, raw: &str) -> Result<String, StoreError> {
    let a = raw.trim();
    if a.is_empty() || a.chars().any(|c| c.is_control()) {
        return Err(StoreError::Invalid(format!(
            "invalid {} address {raw:?}",
            kind_name(kind)
        )));
    }
    match kind {
        contacts::ContactKind::Email => {
            let (local, domain) = a
                .rsplit_once('@')
                .filter(|(l, d)| {
                    !l.is_empty() && d.contains('.') && !a.contains(char::is_whitespace)
                })
                .ok_or_else(|| StoreError::Invalid(format!("invalid email address {raw:?}")))?;
            Ok(format!(
                "{}@{}",
                local.to_lowercase(),
                domain.to_lowercase()
            ))
        }
        contacts::ContactKind::Chat => Ok(a.to_owned()),
    }
}

fn kind_name(kind: contacts::ContactKind) -> &'static str {
    match kind {
        contacts::ContactKind::Email => "email",
        contacts::ContactKind::Chat => "chat",
    }
}

/// Creates or updates a customer by external id and attaches its contacts, inside `db` (a
/// transaction when called from a job). Safe against concurrent upserts of the same ids.
pub async fn upsert_customer(
    db: &impl ConnectionTrait,
    input: &CustomerUpsert,
    now: DateTime<Utc>,
) -> Result<(Uuid, UpsertOutcome), StoreError> {
    upsert_customers(db, std::slice::from_ref(input), now)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Invalid("the upsert returned no customer".into()))
}

/// What an upsert writes, once checked: the customer's external id and its contacts by
/// (kind, normalised address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpsertKey {
    Customer(String),
    Contact(contacts::ContactKind, String),
}

/// The rows `input` writes, checked (empty external id, bad address or time zone:
/// refused). Two upserts with a key in common cannot share one [`upsert_customers`] call.
pub fn upsert_keys(input: &CustomerUpsert) -> Result<Vec<UpsertKey>, StoreError> {
    let prepared = prepare(input)?;
    let mut keys = vec![UpsertKey::Customer(prepared.external_id.to_owned())];
    keys.extend(
        prepared
            .contacts
            .iter()
            .map(|c| UpsertKey::Contact(c.kind, c.address.clone())),
    );
    Ok(keys)
}

/// An upsert's checked input.
struct Prepared<'a> {
    input: &'a CustomerUpsert,
    external_id: &'a str,
    /// One per (kind, address); a contact listed twice is merged, the later value winning.
    contacts: Vec<ContactRow>,
}

struct ContactRow {
    kind: contacts::ContactKind,
    address: String,
    name: Option<String>,
    language: Option<String>,
    time_zone: Option<String>,
}

fn prepare(input: &CustomerUpsert) -> Result<Prepared<'_>, StoreError> {
    let external_id = input.external_id.trim();
    if external_id.is_empty() {
        return Err(StoreError::Invalid("customer external_id is empty".into()));
    }
    let mut rows: Vec<ContactRow> = Vec::with_capacity(input.contacts.len());
    for c in &input.contacts {
        let address = normalise_address(c.kind, &c.address)?;
        if let Some(tz) = &c.time_zone {
            tz.parse::<chrono_tz::Tz>().map_err(|_| {
                StoreError::Invalid(format!(
                    "time zone {tz:?} of contact {address} is not an IANA time zone (like \"Europe/Berlin\")"
                ))
            })?;
        }
        match rows
            .iter_mut()
            .find(|r| r.kind == c.kind && r.address == address)
        {
            Some(r) => {
                r.name = c.name.clone().or(r.name.take());
                r.language = c.language.clone().or(r.language.take());
                r.time_zone = c.time_zone.clone().or(r.time_zone.take());
            }
            None => rows.push(ContactRow {
                kind: c.kind,
                address,
                name: c.name.clone(),
                language: c.language.clone(),
                time_zone: c.time_zone.clone(),
            }),
        }
    }
    Ok(Prepared {
        input,
        external_id,
        contacts: rows,
    })
}

/// Most rows per multi-row statement: well under SQLite's 32,766 bind variables and
/// PostgreSQL's 65,535 at eight columns a row.
const ROWS_PER_STATEMENT: usize = 1000;

/// Several upserts (a batch of `customer-upsert` jobs) in one statement per table instead
/// of three per customer: round trips, not rows, are what a small job costs. Results are in
/// the order of `inputs`. The inputs must not share a customer or contact (see
/// [`upsert_keys`]): one statement cannot insert and then update the same row.
///
/// A contact's name, language and time zone replace the stored ones when given and keep
/// them when not (the CRM's word wins, silence changes nothing).
pub async fn upsert_customers(
    db: &impl ConnectionTrait,
    inputs: &[CustomerUpsert],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, UpsertOutcome)>, StoreError> {
    let prepared = inputs.iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
    if prepared.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    for p in &prepared {
        let contacts = p
            .contacts
            .iter()
            .map(|c| UpsertKey::Contact(c.kind, c.address.clone()));
        for key in std::iter::once(UpsertKey::Customer(p.external_id.to_owned())).chain(contacts) {
            if !seen.insert(key.clone()) {
                return Err(StoreError::Invalid(format!(
                    "{key:?} appears in two upserts of one statement"
                )));
            }
        }
    }

    // Customers. Whether a row was created is read from the row itself (does it carry the
    // id we proposed?), not from a prior SELECT, which two concurrent upserts would both pass.
    let proposed: Vec<Uuid> = prepared.iter().map(|_| Uuid::now_v7()).collect();
    let mut customer_ids = HashMap::with_capacity(prepared.len());
    for chunk in prepared
        .iter()
        .zip(&proposed)
        .collect::<Vec<_>>()
        .chunks(ROWS_PER_STATEMENT)
    {
        let insert = super::bulk::insert_statement(
            db.get_database_backend(),
            chunk.iter().map(|(p, id)| customers::ActiveModel {
                id: Set(**id),
                external_id: Set(p.external_id.to_owned()),
                name: Set(p.input.name.clone()),
                attributes: Set(serde_json::json!({})),
                created_at: Set(now),
                updated_at: Set(now),
            }),
        )?
        .on_conflict(
            OnConflict::column(customers::Column::ExternalId)
                .update_columns([customers::Column::Name, customers::Column::UpdatedAt])
                .to_owned(),
        )
        .take();
        customer_ids.extend(customer_ids_of(db, insert).await?);
    }

    // Contacts.
    let contact_rows: Vec<&ContactRow> = prepared.iter().flat_map(|p| &p.contacts).collect();
    let mut contact_ids = HashMap::with_capacity(contact_rows.len());
    for chunk in contact_rows.chunks(ROWS_PER_STATEMENT) {
        let keep = |col: &str| Expr::cust(format!("COALESCE(excluded.{col}, contacts.{col})"));
        let insert = super::bulk::insert_statement(
            db.get_database_backend(),
            chunk.iter().map(|c| contacts::ActiveModel {
                id: Set(Uuid::now_v7()),
                kind: Set(c.kind),
                address: Set(c.address.clone()),
                display_name: Set(c.name.clone()),
                language: Set(c.language.clone()),
                time_zone: Set(c.time_zone.clone()),
                created_at: Set(now),
                updated_at: Set(now),
            }),
        )?
        .on_conflict(
            OnConflict::columns([contacts::Column::Kind, contacts::Column::Address])
                .value(contacts::Column::DisplayName, keep("display_name"))
                .value(contacts::Column::Language, keep("language"))
                .value(contacts::Column::TimeZone, keep("time_zone"))
                .value(
                    contacts::Column::UpdatedAt,
                    Expr::cust("excluded.updated_at"),
                )
                .to_owned(),
        )
        .take();
        contact_ids.extend(contact_ids_of(db, insert).await?);
    }

    // Links, and the results in input order.
    let mut links = Vec::with_capacity(contact_rows.len());
    let mut results = Vec::with_capacity(prepared.len());
    let mut detach = Vec::new();
    for (p, proposed) in prepared.iter().zip(&proposed) {
        let id = *customer_ids.get(p.external_id).ok_or_else(|| {
            StoreError::Invalid(format!(
                "the upsert returned no row for customer {:?}",
                p.external_id
            ))
        })?;
        let mut keep = Vec::with_capacity(p.contacts.len());
        for c in &p.contacts {
            let kind = kind_name(c.kind).to_owned();
            let contact = *contact_ids.get(&(kind, c.address.clone())).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "the upsert returned no row for contact {}",
                    c.address
                ))
            })?;
            links.push(customer_contacts::ActiveModel {
                customer_id: Set(id),
                contact_id: Set(contact),
                created_at: Set(now),
            });
            keep.push(contact);
        }
        if p.input.replace_contacts {
            detach.push((id, keep));
        }
        let outcome = if id == *proposed {
            UpsertOutcome::Created
        } else {
            UpsertOutcome::Updated
        };
        results.push((id, outcome));
    }
    insert_links(db, links).await?;
    index_upserted(db, &prepared, &customer_ids, &contact_ids).await?;
    for (customer, keep) in detach {
        customer_contacts::Entity::delete_many()
            .filter(customer_contacts::Column::CustomerId.eq(customer))
            .filter(customer_contacts::Column::ContactId.is_not_in(keep))
            .exec(db)
            .await?;
    }
    Ok(results)
}

/// Indexes what [`upsert_customers`] wrote for keyword search: each customer as named now,
/// each contact as stored (its name is kept when the upsert gave none, so it is read back).
async fn index_upserted(
    db: &impl ConnectionTrait,
    prepared: &[Prepared<'_>],
    customer_ids: &HashMap<String, Uuid>,
    contact_ids: &HashMap<(String, String), Uuid>,
) -> Result<(), StoreError> {
    let mut parties: Vec<Party<'_>> = prepared
        .iter()
        .filter_map(|p| {
            customer_ids.get(p.external_id).map(|id| Party {
                id: *id,
                name: Some(p.input.name.as_str()),
                key: p.external_id,
            })
        })
        .collect();
    let mut contacts = Vec::with_capacity(contact_ids.len());
    let ids: Vec<Uuid> = contact_ids.values().copied().collect();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        contacts.extend(
            contacts::Entity::find()
                .filter(super::bulk::any_of(
                    db.get_database_backend(),
                    contacts::Column::Id,
                    chunk.iter().copied(),
                ))
                .all(db)
                .await?,
        );
    }
    parties.extend(contacts.iter().map(|c| Party {
        id: c.id,
        name: c.display_name.as_deref(),
        key: &c.address,
    }));
    super::search::index_parties(db, &parties).await
}

/// The customer with `external_id`, created (named `name`) if there is none; an existing
/// one is left exactly as it is (mail must not rename what the CRM keeps). Returns its id
/// and whether it was created.
pub async fn ensure_customer(
    db: &impl ConnectionTrait,
    external_id: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<(Uuid, bool), StoreError> {
    ensure_customers(db, &[(external_id.to_owned(), name.to_owned())], now)
        .await?
        .pop()
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "the upsert returned no row for customer {external_id}"
            ))
        })
}

/// Finds or creates the contact for an address seen on mail. Unlike [`upsert_contact`]
/// (the CRM's word), a mail's display name and language only fill what the contact lacks.
/// Returns its id and whether it was created.
pub async fn find_or_create_contact(
    db: &impl ConnectionTrait,
    c: &ContactInput,
    now: DateTime<Utc>,
) -> Result<(Uuid, bool), StoreError> {
    find_or_create_contacts(db, std::slice::from_ref(c), now)
        .await?
        .pop()
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "the upsert returned no row for contact {}",
                c.address
            ))
        })
}

/// [`find_or_create_contact`] for several addresses; each id with whether it was created,
/// in order. The inputs must name distinct contacts: merge what a batch says of one
/// address first.
///
/// Contacts that exist are read, not upserted: `ON CONFLICT DO UPDATE` locks every row it
/// meets until the transaction commits, so two batches with a sender in common ran one
/// after the other. Only the missing ones are inserted (`DO NOTHING`, so a contact another
/// batch just created is read back, not duplicated), and only a contact that lacks a name
/// or language the mail gives is updated.
pub async fn find_or_create_contacts(
    db: &impl ConnectionTrait,
    inputs: &[ContactInput],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, bool)>, StoreError> {
    let rows = inputs
        .iter()
        .map(|c| {
            Ok((
                (kind_name(c.kind), normalise_address(c.kind, &c.address)?),
                c,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let keys: Vec<&ContactKey> = rows.iter().map(|(k, _)| k).collect();
    let mut found = find_contacts(db, &keys).await?;
    let missing: Vec<_> = rows
        .iter()
        .filter(|(k, _)| !found.contains_key(k))
        .map(|(k, c)| (k, *c, Uuid::now_v7()))
        .collect();
    let mut created = HashSet::with_capacity(missing.len());
    for chunk in missing.chunks(ROWS_PER_STATEMENT) {
        let insert = super::bulk::insert_statement(
            db.get_database_backend(),
            chunk
                .iter()
                .map(|((_, address), c, id)| contacts::ActiveModel {
                    id: Set(*id),
                    kind: Set(c.kind),
                    address: Set(address.clone()),
                    display_name: Set(c.name.clone()),
                    language: Set(c.language.clone()),
                    time_zone: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                }),
        )?
        .on_conflict(
            OnConflict::columns([contacts::Column::Kind, contacts::Column::Address])
                .do_nothing()
                .to_owned(),
        )
        .take();
        created.extend(
            contact_ids_of(db, insert)
                .await?
                .into_iter()
                .map(|(_, id)| id),
        );
    }
    // What a concurrent batch created between the read and the insert.
    let raced: Vec<&ContactKey> = missing
        .iter()
        .filter(|(_, _, id)| !created.contains(id))
        .map(|(k, _, _)| *k)
        .collect();
    found.extend(find_contacts(db, &raced).await?);
    let made: HashMap<&ContactKey, Uuid> = missing
        .iter()
        .filter(|(_, _, id)| created.contains(id))
        .map(|(k, _, id)| (*k, *id))
        .collect();

    let mut out = Vec::with_capacity(rows.len());
    let mut named = Vec::new();
    for (key, c) in &rows {
        if let Some(id) = made.get(key) {
            out.push((*id, true));
            named.push(Party {
                id: *id,
                name: c.name.as_deref(),
                key: &key.1,
            });
            continue;
        }
        let known = found.get(key).ok_or_else(|| {
            StoreError::Invalid(format!("no contact was found or created for {}", key.1))
        })?;
        let fills =
            |have: &Option<String>, given: &Option<String>| have.is_none() && given.is_some();
        if fills(&known.name, &c.name) || fills(&known.language, &c.language) {
            fill_contact(db, known.id, c).await?;
        }
        if fills(&known.name, &c.name) {
            named.push(Party {
                id: known.id,
                name: c.name.as_deref(),
                key: &key.1,
            });
        }
        out.push((known.id, false));
    }
    super::search::index_parties(db, &named).await?;
    Ok(out)
}

/// A contact's kind (as stored) and normalised address: its natural key.
type ContactKey = (&'static str, String);

/// What [`find_or_create_contacts`] needs of a stored contact.
struct Known {
    id: Uuid,
    name: Option<String>,
    language: Option<String>,
}

/// The stored contacts among `keys`, one statement per thousand.
async fn find_contacts(
    db: &impl ConnectionTrait,
    keys: &[&ContactKey],
) -> Result<HashMap<ContactKey, Known>, StoreError> {
    let mut found = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut any = Condition::any();
        for kind in [contacts::ContactKind::Email, contacts::ContactKind::Chat] {
            let addresses: Vec<&str> = chunk
                .iter()
                .filter(|(k, _)| *k == kind_name(kind))
                .map(|(_, a)| a.as_str())
                .collect();
            if !addresses.is_empty() {
                any = any.add(Condition::all().add(contacts::Column::Kind.eq(kind)).add(
                    super::bulk::any_of(
                        db.get_database_backend(),
                        contacts::Column::Address,
                        addresses,
                    ),
                ));
            }
        }
        if any.is_empty() {
            continue;
        }
        for c in contacts::Entity::find().filter(any).all(db).await? {
            found.insert(
                (kind_name(c.kind), c.address),
                Known {
                    id: c.id,
                    name: c.display_name,
                    language: c.language,
                },
            );
        }
    }
    Ok(found)
}

/// Gives a stored contact the name and language a mail carries where it has none (a mail's
/// word only fills what the contact lacks).
async fn fill_contact(
    db: &impl ConnectionTrait,
    id: Uuid,
    c: &ContactInput,
) -> Result<(), StoreError> {
    let fill = |col: contacts::Column, v: &Option<String>| {
        Expr::from(Func::coalesce([Expr::col(col), Expr::val(v.clone())]))
    };
    contacts::Entity::update_many()
        .col_expr(
            contacts::Column::DisplayName,
            fill(contacts::Column::DisplayName, &c.name),
        )
        .col_expr(
            contacts::Column::Language,
            fill(contacts::Column::Language, &c.language),
        )
        .filter(contacts::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// [`ensure_customer`] for several `(external id, name)` pairs with distinct external ids;
/// each id with whether it was created, in order.
///
/// Inserted first, then read: a mail asks for a customer only when its contact has none,
/// so the customer is nearly always new and one statement does. `DO NOTHING` neither
/// locks nor writes a customer that exists (for the reason [`find_or_create_contacts`]
/// gives); those, and one a concurrent batch is creating (the insert waits for it), are
/// read after.
pub async fn ensure_customers(
    db: &impl ConnectionTrait,
    wanted: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, bool)>, StoreError> {
    let fresh: Vec<_> = wanted.iter().map(|w| (w, Uuid::now_v7())).collect();
    let mut ids = HashMap::with_capacity(wanted.len());
    let mut created = HashSet::with_capacity(wanted.len());
    for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
        let insert = super::bulk::insert_statement(
            db.get_database_backend(),
            chunk
                .iter()
                .map(|((external, name), id)| customers::ActiveModel {
                    id: Set(*id),
                    external_id: Set(external.clone()),
                    name: Set(name.clone()),
                    attributes: Set(serde_json::json!({})),
                    created_at: Set(now),
                    updated_at: Set(now),
                }),
        )?
        .on_conflict(
            OnConflict::column(customers::Column::ExternalId)
                .do_nothing()
                .to_owned(),
        )
        .take();
        for (external, id) in customer_ids_of(db, insert).await? {
            created.insert(id);
            ids.insert(external, id);
        }
    }
    let existing: Vec<&str> = wanted
        .iter()
        .filter(|(e, _)| !ids.contains_key(e))
        .map(|(e, _)| e.as_str())
        .collect();
    ids.extend(find_customers(db, &existing).await?);
    let made: Vec<Party<'_>> = wanted
        .iter()
        .filter_map(|(external, name)| {
            let id = ids.get(external).filter(|id| created.contains(*id))?;
            Some(Party {
                id: *id,
                name: Some(name.as_str()),
                key: external,
            })
        })
        .collect();
    super::search::index_parties(db, &made).await?;
    wanted
        .iter()
        .map(|(external, _)| {
            let id = *ids.get(external).ok_or_else(|| {
                StoreError::Invalid(format!("no customer was found or created for {external}"))
            })?;
            Ok((id, created.contains(&id)))
        })
        .collect()
}

/// The ids of the stored customers among `externals`, by external id.
async fn find_customers(
    db: &impl ConnectionTrait,
    externals: &[&str],
) -> Result<HashMap<String, Uuid>, StoreError> {
    let mut found = HashMap::with_capacity(externals.len());
    for chunk in externals.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(Uuid, String)> = customers::Entity::find()
            .select_only()
            .columns([customers::Column::Id, customers::Column::ExternalId])
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                customers::Column::ExternalId,
                chunk.iter().copied(),
            ))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(rows.into_iter().map(|(id, e)| (e, id)));
    }
    Ok(found)
}

/// Attaches each `(customer, contact)` pair; links that exist stay as they are.
pub async fn attach_contacts(
    db: &impl ConnectionTrait,
    pairs: &[(Uuid, Uuid)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let links = pairs
        .iter()
        .map(|(customer, contact)| customer_contacts::ActiveModel {
            customer_id: Set(*customer),
            contact_id: Set(*contact),
            created_at: Set(now),
        })
        .collect();
    insert_links(db, links).await
}

/// Runs a contacts insert and returns the id of each row it inserted or updated, by (kind,
/// address).
async fn contact_ids_of(
    db: &impl ConnectionTrait,
    insert: InsertStatement,
) -> Result<Vec<((String, String), Uuid)>, StoreError> {
    let columns = [
        contacts::Column::Id,
        contacts::Column::Kind,
        contacts::Column::Address,
    ];
    returning(db, insert, columns)
        .await?
        .iter()
        .map(|row| {
            let id: Uuid = row.try_get_by_index(0)?;
            Ok(((row.try_get_by_index(1)?, row.try_get_by_index(2)?), id))
        })
        .collect()
}

/// Runs a customers insert and returns the id of each row it wrote, by external id.
async fn customer_ids_of(
    db: &impl ConnectionTrait,
    insert: InsertStatement,
) -> Result<Vec<(String, Uuid)>, StoreError> {
    let columns = [customers::Column::Id, customers::Column::ExternalId];
    returning(db, insert, columns)
        .await?
        .iter()
        .map(|row| {
            let id: Uuid = row.try_get_by_index(0)?;
            Ok((row.try_get_by_index(1)?, id))
        })
        .collect()
}

/// Runs an insert with `RETURNING columns`, in one round trip (native on PostgreSQL and
/// SQLite ≥ 3.35). SeaORM's own returning is emulated on SQLite by a select of the
/// *proposed* key, which is the wrong row after a conflict, so the statement is built here.
async fn returning<C>(
    db: &impl ConnectionTrait,
    mut insert: InsertStatement,
    columns: impl IntoIterator<Item = C>,
) -> Result<Vec<sea_orm::QueryResult>, StoreError>
where
    C: sea_orm::sea_query::IntoColumnRef,
{
    insert.returning(Query::returning().columns(columns));
    Ok(db.query_all(&insert).await?)
}

/// Attaches contacts to customers; a link that exists already stays as it is.
async fn insert_links(
    db: &impl ConnectionTrait,
    links: Vec<customer_contacts::ActiveModel>,
) -> Result<(), StoreError> {
    super::insert_links_in_chunks(
        db,
        links,
        ROWS_PER_STATEMENT,
        [
            customer_contacts::Column::CustomerId,
            customer_contacts::Column::ContactId,
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use contacts::ContactKind;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalise_address(ContactKind::Email, " Anna.M@Example.COM ")
                .ok()
                .as_deref(),
            Some("anna.m@example.com")
        );
        for bad in [
            "",
            "anna",
            "anna@",
            "@example.com",
            "a b@example.com",
            "anna@example.com\r\nBcc: x@y.z",
            "anna@localhost",
        ] {
            assert!(
                normalise_address(ContactKind::Email, bad).is_err(),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            normalise_address(ContactKind::Chat, " widget:42 ")
                .ok()
                .as_deref(),
            Some("widget:42")
        );
    }
}

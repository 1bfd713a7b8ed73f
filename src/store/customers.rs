//! Customers and their contacts: the upsert other tools (and ops) use to keep them in sync.

use chrono::{DateTime, Utc};
use gochat_entities::{contacts, customer_contacts, customers};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::Deserialize;
use uuid::Uuid;

use super::StoreError;

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
    let external_id = input.external_id.trim();
    if external_id.is_empty() {
        return Err(StoreError::Invalid("customer external_id is empty".into()));
    }
    // Whether this call created the row is read from the row itself (does it carry the id we
    // proposed?), not from a prior SELECT, which two concurrent upserts would both pass.
    let proposed = Uuid::now_v7();
    let insert = customers::Entity::insert(customers::ActiveModel {
        id: Set(proposed),
        external_id: Set(external_id.to_owned()),
        name: Set(input.name.clone()),
        attributes: Set(serde_json::json!({})),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(customers::Column::ExternalId)
            .update_columns([customers::Column::Name, customers::Column::UpdatedAt])
            .to_owned(),
    );
    let id = super::upsert_returning_id(db, insert, customers::Column::Id).await?;
    let outcome = if id == proposed {
        UpsertOutcome::Created
    } else {
        UpsertOutcome::Updated
    };

    let mut keep = Vec::with_capacity(input.contacts.len());
    for c in &input.contacts {
        let contact = upsert_contact(db, c, now).await?;
        link(db, id, contact, now).await?;
        keep.push(contact);
    }
    if input.replace_contacts {
        customer_contacts::Entity::delete_many()
            .filter(customer_contacts::Column::CustomerId.eq(id))
            .filter(customer_contacts::Column::ContactId.is_not_in(keep))
            .exec(db)
            .await?;
    }
    Ok((id, outcome))
}

/// Finds or creates a contact by (kind, normalised address); a given name or language
/// updates the stored one. Returns its id.
pub async fn upsert_contact(
    db: &impl ConnectionTrait,
    c: &ContactInput,
    now: DateTime<Utc>,
) -> Result<Uuid, StoreError> {
    let address = normalise_address(c.kind, &c.address)?;
    let mut update = vec![contacts::Column::UpdatedAt];
    if c.name.is_some() {
        update.push(contacts::Column::DisplayName);
    }
    if c.language.is_some() {
        update.push(contacts::Column::Language);
    }
    if let Some(tz) = &c.time_zone {
        tz.parse::<chrono_tz::Tz>().map_err(|_| {
            StoreError::Invalid(format!(
                "time zone {tz:?} of contact {address} is not an IANA time zone (like \"Europe/Berlin\")"
            ))
        })?;
        update.push(contacts::Column::TimeZone);
    }
    let insert = contacts::Entity::insert(contacts::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(c.kind),
        address: Set(address),
        display_name: Set(c.name.clone()),
        language: Set(c.language.clone()),
        time_zone: Set(c.time_zone.clone()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([contacts::Column::Kind, contacts::Column::Address])
            .update_columns(update)
            .to_owned(),
    );
    super::upsert_returning_id(db, insert, contacts::Column::Id).await
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
    let proposed = Uuid::now_v7();
    let insert = customers::Entity::insert(customers::ActiveModel {
        id: Set(proposed),
        external_id: Set(external_id.to_owned()),
        name: Set(name.to_owned()),
        attributes: Set(serde_json::json!({})),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(customers::Column::ExternalId)
            .update_column(customers::Column::ExternalId)
            .to_owned(),
    );
    let id = super::upsert_returning_id(db, insert, customers::Column::Id).await?;
    Ok((id, id == proposed))
}

/// Finds or creates the contact for an address seen on mail. Unlike [`upsert_contact`]
/// (the CRM's word), a mail's display name and language only fill what the contact lacks.
/// Returns its id and whether it was created.
pub async fn find_or_create_contact(
    db: &impl ConnectionTrait,
    c: &ContactInput,
    now: DateTime<Utc>,
) -> Result<(Uuid, bool), StoreError> {
    let address = normalise_address(c.kind, &c.address)?;
    let proposed = Uuid::now_v7();
    let insert = contacts::Entity::insert(contacts::ActiveModel {
        id: Set(proposed),
        kind: Set(c.kind),
        address: Set(address),
        display_name: Set(c.name.clone()),
        language: Set(c.language.clone()),
        time_zone: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([contacts::Column::Kind, contacts::Column::Address])
            .value(
                contacts::Column::DisplayName,
                Expr::cust("COALESCE(contacts.display_name, excluded.display_name)"),
            )
            .value(
                contacts::Column::Language,
                Expr::cust("COALESCE(contacts.language, excluded.language)"),
            )
            .to_owned(),
    );
    let id = super::upsert_returning_id(db, insert, contacts::Column::Id).await?;
    Ok((id, id == proposed))
}

/// Attaches `contact` to `customer` (already attached: nothing changes).
pub async fn attach_contact(
    db: &impl ConnectionTrait,
    customer: Uuid,
    contact: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    link(db, customer, contact, now).await
}

async fn link(
    db: &impl ConnectionTrait,
    customer: Uuid,
    contact: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    customer_contacts::Entity::insert(customer_contacts::ActiveModel {
        customer_id: Set(customer),
        contact_id: Set(contact),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            customer_contacts::Column::CustomerId,
            customer_contacts::Column::ContactId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
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

//! API keys: created with a random secret shown once, stored as a SHA-256 of that secret,
//! checked per request in constant time, revoked by id.
//!
//! A key reads `gck_<id>_<secret>`: the id finds the row with one primary-key lookup, so a
//! check costs one indexed read and one hash, whatever the number of keys. A plain SHA-256
//! (no slow KDF) is enough because the secret is 256 random bits, not a password.

use chrono::{DateTime, Utc};
use gochat_entities::api_keys;
use rand::RngCore;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, QueryOrder};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::StoreError;

const PREFIX: &str = "gck_";

/// What a key may do. A write key may also read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            _ => None,
        }
    }
}

/// A valid key's identity, as handlers see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: String,
    pub scope: Scope,
}

/// A key as `gochat api-key list` shows it.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: Uuid,
    pub name: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Creates a key; returns it with the full token, which exists nowhere else afterwards.
pub async fn create(
    db: &impl ConnectionTrait,
    name: &str,
    scope: Scope,
    now: DateTime<Utc>,
) -> Result<(KeyRow, String), StoreError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(StoreError::Invalid(
            "an API key's name must be 1 to 200 characters".into(),
        ));
    }
    let id = Uuid::now_v7();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    api_keys::Entity::insert(api_keys::ActiveModel {
        id: Set(id),
        name: Set(name.to_owned()),
        scope: Set(scope.as_str().to_owned()),
        secret_hash: Set(hash(&secret)),
        created_at: Set(now),
        revoked_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    let token = format!("{PREFIX}{}_{secret}", id.simple());
    Ok((
        KeyRow {
            id,
            name: name.to_owned(),
            scope,
            created_at: now,
            revoked_at: None,
        },
        token,
    ))
}

/// Every key, oldest first, revoked ones included.
pub async fn list(db: &impl ConnectionTrait) -> Result<Vec<KeyRow>, StoreError> {
    Ok(api_keys::Entity::find()
        .order_by_asc(api_keys::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|k| {
            Some(KeyRow {
                scope: Scope::parse(&k.scope)?,
                id: k.id,
                name: k.name,
                created_at: k.created_at,
                revoked_at: k.revoked_at,
            })
        })
        .collect())
}

/// Revokes a key; `false` when there is no such key or it was already revoked.
pub async fn revoke(
    db: &impl ConnectionTrait,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(key) = api_keys::Entity::find_by_id(id).one(db).await? else {
        return Ok(false);
    };
    if key.revoked_at.is_some() {
        return Ok(false);
    }
    let mut m: api_keys::ActiveModel = key.into();
    m.revoked_at = Set(Some(now));
    api_keys::Entity::update(m).exec(db).await?;
    Ok(true)
}

/// The key `token` names, when it exists, is not revoked and its secret matches.
pub async fn verify(db: &impl ConnectionTrait, token: &str) -> Result<Option<KeyInfo>, StoreError> {
    let Some((id, secret)) = split(token) else {
        return Ok(None);
    };
    let Some(key) = api_keys::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let matches = constant_time_eq(hash(secret).as_bytes(), key.secret_hash.as_bytes());
    if !matches || key.revoked_at.is_some() {
        return Ok(None);
    }
    Ok(Scope::parse(&key.scope).map(|scope| KeyInfo {
        id: key.id,
        name: key.name,
        scope,
    }))
}

/// `gck_<32 hex>_<secret>` → (id, secret).
fn split(token: &str) -> Option<(Uuid, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, secret))
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal inputs, compared without an early exit: the time taken does not tell an attacker
/// how many leading bytes of a guess were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_into_id_and_secret() {
        let id = Uuid::now_v7();
        let token = format!("gck_{}_abc", id.simple());
        assert_eq!(split(&token), Some((id, "abc")));
        assert_eq!(split("gck_nothex_abc"), None);
        assert_eq!(split(&format!("gck_{}_", id.simple())), None);
        assert_eq!(split(&format!("xyz_{}_abc", id.simple())), None);
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq(b"abcd", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abce"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
    }
}

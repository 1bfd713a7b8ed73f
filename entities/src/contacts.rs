//! An email address or chat identity. One contact may belong to several customers.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contacts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: ContactKind,
    /// Normalised (emails lower-cased) so one person is one row; unique with `kind`.
    pub address: String,
    pub display_name: Option<String>,
    /// BCP 47 tag; picks the template language.
    pub language: Option<String>,
    /// IANA time zone (`Europe/Berlin`): dates in their mail are their local time.
    pub time_zone: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum ContactKind {
    #[sea_orm(string_value = "email")]
    Email,
    #[sea_orm(string_value = "chat")]
    Chat,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::customer_contacts::Entity")]
    CustomerContacts,
}

impl Related<super::customers::Entity> for Entity {
    fn to() -> RelationDef {
        super::customer_contacts::Relation::Customer.def()
    }
    fn via() -> Option<RelationDef> {
        Some(super::customer_contacts::Relation::Contact.def().rev())
    }
}

impl ActiveModelBehavior for ActiveModel {}

//! `gochat customer upsert`: the ops command to create or update a customer and attach its
//! contacts, the same operation as the `customer-upsert` job.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use gochat_entities::contacts::ContactKind;

use crate::config::Config;
use crate::store::{ContactInput, CustomerUpsert, Store, UpsertOutcome, customers};

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create or update a customer by external id and attach contacts.
    Upsert(UpsertArgs),
}

#[derive(Debug, Args)]
pub struct UpsertArgs {
    /// The customer's id across Algoreg.
    #[arg(long)]
    pub external_id: String,
    #[arg(long)]
    pub name: String,
    /// An email contact, `ADDRESS` or `Display Name <ADDRESS>`; repeatable.
    #[arg(long = "email", value_name = "CONTACT")]
    pub emails: Vec<String>,
    /// A chat identity; repeatable.
    #[arg(long = "chat", value_name = "ID")]
    pub chats: Vec<String>,
    /// Language (BCP 47, e.g. `fr`) of the contacts given here.
    #[arg(long)]
    pub language: Option<String>,
    /// Time zone (IANA, e.g. `Europe/Paris`) of the contacts given here.
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Detach the customer's contacts not listed here.
    #[arg(long)]
    pub replace_contacts: bool,
}

pub async fn run(config: &Config, cmd: CustomerCommand) -> anyhow::Result<ExitCode> {
    let CustomerCommand::Upsert(args) = cmd;
    let mut contacts: Vec<ContactInput> = args
        .emails
        .iter()
        .map(|e| {
            let (name, address) = split_display(e);
            ContactInput {
                kind: ContactKind::Email,
                address,
                name,
                language: args.language.clone(),
                time_zone: args.time_zone.clone(),
            }
        })
        .collect();
    contacts.extend(args.chats.iter().map(|c| ContactInput {
        kind: ContactKind::Chat,
        address: c.clone(),
        name: None,
        language: args.language.clone(),
        time_zone: args.time_zone.clone(),
    }));
    let input = CustomerUpsert {
        external_id: args.external_id,
        name: args.name,
        contacts,
        replace_contacts: args.replace_contacts,
    };
    let store = Store::connect(&config.database).await?;
    store.ensure_schema(false).await?;
    let txn = sea_orm::TransactionTrait::begin(store.conn()).await?;
    let (id, outcome) = customers::upsert_customer(&txn, &input, chrono::Utc::now()).await?;
    txn.commit().await?;
    store.close().await;
    let verb = if outcome == UpsertOutcome::Created {
        "created"
    } else {
        "updated"
    };
    println!(
        "customer {} {verb} ({id}), {} contact(s) attached",
        input.external_id,
        input.contacts.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `Anna Muller <anna@example.com>` → (Some("Anna Muller"), "anna@example.com").
fn split_display(raw: &str) -> (Option<String>, String) {
    match (raw.find('<'), raw.rfind('>')) {
        (Some(l), Some(r)) if l < r => {
            let name = raw[..l].trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then(|| name.to_owned()),
                raw[l + 1..r].trim().to_owned(),
            )
        }
        _ => (None, raw.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_display;

    #[test]
    fn display_names_are_split() {
        assert_eq!(
            split_display("Anna Muller <anna@example.com>"),
            (Some("Anna Muller".into()), "anna@example.com".into())
        );
        assert_eq!(
            split_display("\"B\" <b@x.io>"),
            (Some("B".into()), "b@x.io".into())
        );
        assert_eq!(split_display("c@x.io"), (None, "c@x.io".into()));
    }
}

//! `upsert_sender`: the sending contact, and for a new sender of normal mail a customer.

use std::collections::HashMap;

use crate::mail::auth;
use crate::mail::inbound::{InboundMail, Sender};
use crate::services::Services;
use crate::store::{ContactInput, customers, inbound as store};
use crate::workflow::actions::inbound::{
    count_item, is_normal_mail, mail_of, refused, sender_actor,
};
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::set::{SET_LOCK_WAIT, sorted, unsorted};

/// `upsert_sender`.
pub struct UpsertSender;

static UPSERT_SENDER: ActionSpec = ActionSpec {
    name: "upsert_sender",
    summary: "Finds or creates the sending contact (From, else the envelope sender; address \
              normalised; display name and `Content-Language` fill what the contact lacks). \
              A sender of normal mail who belongs to no customer gets one: the customer \
              `mail.domain_customers` names for their domain, else a new customer of their \
              own (`email:<address>`). Auto-replies and loops never create customers. A mail \
              with no usable sender address is refused to the dead letters.",
    params: &[],
    reads: &["inbound.class"],
    writes: &[
        FactSpec {
            name: "inbound.contact_id",
            ty: FactType::Uuid,
            doc: "The sending contact.",
        },
        FactSpec {
            name: "inbound.contact_created",
            ty: FactType::Bool,
            doc: "The contact is new.",
        },
        FactSpec {
            name: "inbound.customer_created",
            ty: FactType::Bool,
            doc: "A customer was created for the sender.",
        },
        FactSpec {
            name: "inbound.auth",
            ty: FactType::Enum(&["pass", "fail", "unknown"]),
            doc: "What the `Authentication-Results` of our MTA (`mail.authserv_id`) say of the \
                  sender: `fail` (DMARC, or SPF/DKIM without a pass) makes them a stranger to \
                  every thread and their new threads flagged `unauthenticated_sender`; \
                  `unknown` without such a header or setting.",
        },
        FactSpec {
            name: "inbound.actor",
            ty: FactType::Object,
            doc: "The sender as the actor of what their mail changes (`{kind: contact, id, name}`).",
        },
    ],
};

#[async_trait::async_trait]
impl Action for UpsertSender {
    fn spec(&self) -> &'static ActionSpec {
        &UPSERT_SENDER
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// The batch's contacts, their customers, the missing customers and
    /// their links, one statement each. A contact met twice is written once, with what the
    /// mails say of it merged in order (the first name given fills a missing one, as running
    /// one after the other would).
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let (services, now) = (batch.services, batch.now);
        let tx = &mut *batch.tx;
        // Each item's contact input (or why it is refused), and the distinct contacts.
        let mut inputs: Vec<Result<ContactInput, String>> = Vec::with_capacity(items.len());
        let mut contacts: Vec<ContactInput> = Vec::new();
        let mut slot: Vec<Option<usize>> = Vec::with_capacity(items.len());
        for item in items.iter() {
            let input = sender_input(mail_of(item)?)?;
            let at = input.as_ref().ok().map(|c| {
                match contacts.iter().position(|d| d.address == c.address) {
                    Some(at) => {
                        let known = &mut contacts[at];
                        known.name = known.name.take().or_else(|| c.name.clone());
                        known.language = known.language.take().or_else(|| c.language.clone());
                        at
                    }
                    None => {
                        contacts.push(c.clone());
                        contacts.len() - 1
                    }
                }
            });
            slot.push(at);
            inputs.push(input);
        }
        // Another batch that inserted one of these contacts or customers holds it until it
        // commits, within its own run; failing here would run this whole batch one job at a
        // time, so these statements may wait longer than the batch's bound. The rows go in
        // sorted, so two batches take them in the same order and cannot deadlock on them.
        let bound = tx.lock_wait();
        if bound.is_some() {
            tx.bound_lock_waits(SET_LOCK_WAIT).await?;
        }
        let db = tx.get().await?;
        let (order, rows) = sorted(&contacts, |c| c.address.clone());
        let written = unsorted(
            &order,
            customers::find_or_create_contacts(db, &rows, now).await?,
        )?;
        // The customers of the contacts that sent normal mail; a contact the statement above
        // created belongs to none yet.
        let normal: Vec<bool> = items
            .iter()
            .map(|item| mail_of(item).map(is_normal_mail))
            .collect::<Result<_, _>>()?;
        let mut asked: Vec<uuid::Uuid> = slot
            .iter()
            .zip(&normal)
            .filter_map(|(at, n)| at.filter(|_| *n).map(|at| written[at]))
            .filter_map(|(id, created)| (!created).then_some(id))
            .collect();
        asked.sort();
        asked.dedup();
        let known = store::customers_of_contacts(db, &asked).await?;

        // A customer for each contact of normal mail that has none, named from its first
        // such mail (as running in order would), created once per external id.
        let mut wanted: Vec<(String, String)> = Vec::new();
        let mut wanted_by: HashMap<uuid::Uuid, usize> = HashMap::new();
        for (k, input) in inputs.iter().enumerate() {
            let (Ok(input), Some(at)) = (input, slot[k]) else {
                continue;
            };
            let contact = written[at].0;
            if !normal[k] || known.contains_key(&contact) || wanted_by.contains_key(&contact) {
                continue;
            }
            let (external, name) = new_customer(services, input);
            let w = match wanted.iter().position(|(e, _)| *e == external) {
                Some(w) => w,
                None => {
                    wanted.push((external, name));
                    wanted.len() - 1
                }
            };
            wanted_by.insert(contact, w);
        }
        let (order, rows) = sorted(&wanted, |(external, _)| external.clone());
        let made = unsorted(&order, customers::ensure_customers(db, &rows, now).await?)?;
        let mut links: Vec<(uuid::Uuid, uuid::Uuid)> = wanted_by
            .iter()
            .map(|(contact, w)| (made[*w].0, *contact))
            .collect();
        links.sort();
        customers::attach_contacts(db, &links, now).await?;
        if let Some(bound) = bound {
            tx.bound_lock_waits(bound).await?;
        }

        // Each mail's sender, as if run in order: only the first mail of a new contact created
        // it, only the first normal mail needing a customer created one.
        let mut contact_told = vec![false; contacts.len()];
        let mut customer_told = vec![false; wanted.len()];
        let mut flows = Vec::with_capacity(items.len());
        let mut refusals = Vec::new();
        for (k, item) in items.iter_mut().enumerate() {
            let (input, at) = match (&inputs[k], slot[k]) {
                (Ok(input), Some(at)) => (input, at),
                (Err(why), _) => {
                    count_item(item, "refused");
                    let (mark, reason) = refused(mail_of(item)?.raw_id, why);
                    refusals.push(mark);
                    flows.push(Ok(Flow::Refuse(reason)));
                    continue;
                }
                (Ok(_), None) => return Err(JobError::permanent("a sender lost its contact")),
            };
            let (contact_id, created) = written[at];
            let contact_created = created && !std::mem::replace(&mut contact_told[at], true);
            let mut customer_created = false;
            let mut customers = Vec::new();
            if normal[k] {
                if let Some(list) = known.get(&contact_id) {
                    customers = list.iter().map(|c| (c.id, c.attributes.clone())).collect();
                } else if let Some(&w) = wanted_by.get(&contact_id) {
                    let (customer, created) = made[w];
                    customer_created = created && !std::mem::replace(&mut customer_told[w], true);
                    customers.push((customer, json!({})));
                }
            }
            let sender = Sender {
                contact_id,
                address: input.address.clone(),
                name: input.name.clone(),
                customers,
            };
            record_sender(
                services,
                &mut item.facts,
                item.inbound.as_deref_mut(),
                sender,
                contact_created,
                customer_created,
            );
            flows.push(Ok(Flow::Continue));
        }
        if !refusals.is_empty() {
            store::mark_raw_many(tx.get().await?, &refusals, now).await?;
        }
        Ok(flows)
    }
}

/// The mail's sender as a contact: the From address, else the envelope sender, the first
/// that is a usable address. `Ok(Err(why))` refuses the mail.
pub(in crate::workflow::actions) fn sender_input(
    m: &InboundMail,
) -> Result<Result<ContactInput, String>, JobError> {
    let p = m.parsed.as_ref().ok_or_else(|| {
        JobError::permanent("the mail is not parsed at this step (`parse_mail` did not run)")
    })?;
    let candidates = p
        .from
        .iter()
        .map(|f| (f.address.clone(), f.name.clone()))
        .chain(m.envelope_from.iter().map(|e| (e.clone(), None)));
    for (address, name) in candidates {
        if let Ok(normal) =
            customers::normalise_address(gochat_entities::contacts::ContactKind::Email, &address)
        {
            return Ok(Ok(ContactInput {
                kind: gochat_entities::contacts::ContactKind::Email,
                address: normal,
                name: name.filter(|n| !n.trim().is_empty()),
                language: p.content_language.clone(),
                time_zone: None,
            }));
        }
    }
    Ok(Err(format!(
        "the mail has no usable sender address (From: {:?}, envelope: {:?})",
        p.from.as_ref().map(|f| &f.address),
        m.envelope_from
    )))
}

/// The customer (external id, name) a sender of normal mail who belongs to none gets: the
/// one `mail.domain_customers` names for their domain, else their own.
pub(in crate::workflow::actions) fn new_customer(
    services: &Services,
    c: &ContactInput,
) -> (String, String) {
    let domain = c.address.rsplit_once('@').map_or("", |(_, d)| d);
    match services.config.mail.domain_customers.get(domain) {
        Some(external) => (external.clone(), domain.to_owned()),
        None => (
            format!("email:{}", c.address),
            c.name.clone().unwrap_or_else(|| c.address.clone()),
        ),
    }
}

/// Sets the sender's facts and hands it to the steps after.
pub(in crate::workflow::actions) fn record_sender(
    services: &Services,
    facts: &mut Facts,
    mail: Option<&mut InboundMail>,
    sender: Sender,
    contact_created: bool,
    customer_created: bool,
) {
    // Whether the From is the sender's to use, by our MTA's Authentication-Results.
    let verdict = mail
        .as_ref()
        .and_then(|m| m.parsed.as_ref())
        .map_or(auth::Verdict::Unknown, |p| {
            auth::verdict(p, services.config.mail.authserv_id.as_deref())
        });
    facts.set("inbound.auth", json!(verdict.name()));
    let spoofed = matches!(verdict, auth::Verdict::Fail(_));
    if let auth::Verdict::Fail(why) = &verdict {
        tracing::info!(sender = %sender.address, results = %why, "the sender failed authentication: handled as a stranger");
    }
    facts.set("inbound.contact_id", json!(sender.contact_id));
    facts.set("inbound.contact_created", json!(contact_created));
    facts.set("inbound.customer_created", json!(customer_created));
    facts.set("inbound.actor", sender_actor(&sender));
    if let Some(m) = mail {
        m.sender = Some(sender);
        m.spoofed = spoofed;
    }
}

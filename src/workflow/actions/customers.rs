//! Customers and their contacts.

use std::collections::HashSet;

use uuid::Uuid;

use crate::store::{CustomerUpsert, UpsertOutcome, customers};
use crate::workflow::actions::prelude::*;

/// `upsert_customer`: the `customer-upsert` job's payload applied to the store.
pub struct UpsertCustomer;

static UPSERT_CUSTOMER: ActionSpec = ActionSpec {
    name: "upsert_customer",
    summary: "Creates or updates the customer `job.external_id` and attaches `job.contacts` \
              (detaching the others when `job.replace_contacts`).",
    params: &[],
    reads: &["job.external_id", "job.name"],
    writes: &[
        FactSpec {
            name: "customer.id",
            ty: FactType::Uuid,
            doc: "The customer's internal id.",
        },
        FactSpec {
            name: "customer.external_id",
            ty: FactType::Str,
            doc: "As given, trimmed.",
        },
        FactSpec {
            name: "customer.created",
            ty: FactType::Bool,
            doc: "True if the customer is new.",
        },
    ],
};

#[async_trait::async_trait]
impl Action for UpsertCustomer {
    fn spec(&self) -> &'static ActionSpec {
        &UPSERT_CUSTOMER
    }

    fn form(&self) -> Form {
        Form::Set
    }

    /// All the batch's customers, contacts and links in three statements. A job that
    /// shares a customer or contact with an earlier one of the batch is cut off to run on
    /// its own: one statement cannot write the same row twice, and in order is how a
    /// sequence of syncs of one customer must apply.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        _params: &Params,
    ) -> Result<Flows, JobError> {
        let mut inputs = Vec::with_capacity(items.len());
        let mut taken = HashSet::new();
        for item in items.iter() {
            let input = match payload(item.job) {
                Ok(input) => input,
                Err(e) => return Ok(cut_at(inputs.len(), e)),
            };
            let keys = match customers::upsert_keys(&input) {
                Ok(keys) => keys,
                Err(e) => return Ok(cut_at(inputs.len(), e.into())),
            };
            if keys.iter().any(|k| taken.contains(k)) {
                return Ok(cut_at(
                    inputs.len(),
                    JobError::transient(
                        "shares a customer or contact with an earlier job of its batch",
                    ),
                ));
            }
            taken.extend(keys);
            inputs.push(input);
        }
        let written =
            customers::upsert_customers(batch.tx.get().await?, &inputs, batch.now).await?;
        for ((item, input), (id, outcome)) in items.iter_mut().zip(&inputs).zip(written) {
            record(&mut item.facts, input, id, outcome);
        }
        Ok(items.iter().map(|_| Ok(Flow::Continue)).collect())
    }
}

fn payload(job: &Job) -> Result<CustomerUpsert, JobError> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::permanent(format!("invalid customer-upsert payload: {e}")))
}

fn record(facts: &mut Facts, input: &CustomerUpsert, id: Uuid, outcome: UpsertOutcome) {
    facts.set("customer.id", Value::String(id.to_string()));
    facts.set(
        "customer.external_id",
        Value::String(input.external_id.trim().to_owned()),
    );
    facts.set(
        "customer.created",
        Value::Bool(outcome == UpsertOutcome::Created),
    );
}

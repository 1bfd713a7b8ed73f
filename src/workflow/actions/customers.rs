//! Customers and their contacts.

use serde_json::Value;

use crate::jobs::JobError;
use crate::store::{CustomerUpsert, UpsertOutcome, customers};
use crate::workflow::action::{Action, Flow, Params, StepContext};
use crate::workflow::spec::{ActionSpec, FactSpec, FactType};

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

    async fn run(&self, ctx: &mut StepContext<'_>, _params: &Params) -> Result<Flow, JobError> {
        let input: CustomerUpsert = serde_json::from_value(ctx.job.payload.clone())
            .map_err(|e| JobError::permanent(format!("invalid customer-upsert payload: {e}")))?;
        let now = ctx.now;
        let (id, outcome) = customers::upsert_customer(ctx.db().await?, &input, now).await?;
        ctx.facts.set("customer.id", Value::String(id.to_string()));
        ctx.facts.set(
            "customer.external_id",
            Value::String(input.external_id.trim().to_owned()),
        );
        ctx.facts.set(
            "customer.created",
            Value::Bool(outcome == UpsertOutcome::Created),
        );
        Ok(Flow::Continue)
    }
}

//! `set_customers`.

use crate::store::threads;
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::threads::{ACTOR, THREAD_FACTS, actor};

/// `set_customers`.
pub struct SetCustomers;

static SET_CUSTOMERS: ActionSpec = ActionSpec {
    name: "set_customers",
    summary: "Replaces the thread's customers by those whose external ids are in fact `customers`. \
              An unknown customer is a permanent failure.",
    params: &[
        ParamSpec {
            name: "customers",
            ty: ParamType::Fact,
            default: Some("job.customers_set"),
            doc: "The fact holding external ids.",
        },
        ACTOR,
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for SetCustomers {
    fn spec(&self) -> &'static ActionSpec {
        &SET_CUSTOMERS
    }

    /// Changes only its own job's thread (locked by `load_thread`) and that thread's rows.
    fn form(&self) -> Form {
        Form::Interleaved
    }

    async fn run_job(&self, ctx: &mut StepContext<'_>, params: &Params) -> Result<Flow, JobError> {
        let ids = ctx.facts.strings(params.str("customers")?);
        let who = actor(ctx, params);
        let current = ctx.thread()?.clone();
        let now = ctx.now;
        let saved = threads::set_customers(ctx.db().await?, &current, &ids, &who, now).await?;
        ctx.set_thread(saved);
        Ok(Flow::Continue)
    }
}

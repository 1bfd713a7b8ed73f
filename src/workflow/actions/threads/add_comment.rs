//! `add_comment`: the batch's comments in one statement, their threads' cards in another.

use crate::store::threads;
use crate::workflow::actions::prelude::*;
use crate::workflow::actions::threads::{Cards, THREAD_FACTS};

/// `add_comment`.
pub struct AddComment;

static ADD_COMMENT: ActionSpec = ActionSpec {
    name: "add_comment",
    summary: "Adds an internal comment (agents only, never sent to the customer).",
    params: &[
        ParamSpec {
            name: "body",
            ty: ParamType::Fact,
            default: Some("job.comment"),
            doc: "The fact holding the text.",
        },
        ParamSpec {
            name: "author",
            ty: ParamType::Fact,
            default: Some("job.actor"),
            doc: "The fact holding the author.",
        },
    ],
    reads: &["thread.id"],
    writes: THREAD_FACTS,
};

#[async_trait::async_trait]
impl Action for AddComment {
    fn spec(&self) -> &'static ActionSpec {
        &ADD_COMMENT
    }

    /// The batch's comments in one statement and their threads' cards in another (see [`for_batch`]).
    fn form(&self) -> Form {
        Form::Set
    }

    /// The batch's comments in one statement, their threads' cards in another.
    async fn run(
        &self,
        batch: &mut Batch<'_>,
        items: &mut [&mut JobState<'_>],
        params: &Params,
    ) -> Result<Flows, JobError> {
        let mut cards = Cards::default();
        let mut rows = Vec::with_capacity(items.len());
        let mut flows = Vec::with_capacity(items.len());
        for (k, item) in items.iter_mut().enumerate() {
            let taken = comment(&item.facts, params)
                .and_then(|(body, author)| Ok((body, author, cards.current(&batch.memo, item)?)));
            let (body, author, before) = match taken {
                Ok(taken) => taken,
                Err(e) => return Ok(cut_at(k, e)),
            };
            rows.push(threads::comment_row(before.id, &author, &body, batch.now));
            let after = threads::bump(&before, threads::with_comment(&before), batch.now);
            cards.change(&before, after.clone());
            item.set_thread(after);
            flows.push(Ok(Flow::Continue));
        }
        threads::insert_comments(batch.tx.get().await?, rows).await?;
        cards.write(batch).await?;
        Ok(flows)
    }
}

/// The comment `add_comment` adds (trimmed; an empty one is refused) and its author.
pub(in crate::workflow::actions) fn comment(
    facts: &Facts,
    params: &Params,
) -> Result<(String, Value), JobError> {
    let body = facts
        .str(params.str("body")?)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if body.is_empty() {
        return Err(JobError::permanent("the comment is empty"));
    }
    let author = facts
        .get(params.str("author")?)
        .cloned()
        .unwrap_or(Value::Null);
    Ok((body, author))
}

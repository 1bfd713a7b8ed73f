//! The built-in actions, one module per thing they touch.

mod customers;
mod events;
mod flow;
mod inbound;
mod lifecycle;
mod notify;
mod outbound;
mod prelude;
mod set;
mod threads;

use std::sync::Arc;

use super::action::Action;

/// Every built-in action.
pub fn all() -> Vec<Arc<dyn Action>> {
    vec![
        Arc::new(customers::UpsertCustomer),
        Arc::new(threads::LoadThread),
        Arc::new(threads::SetStatus),
        Arc::new(threads::SetAssignee),
        Arc::new(threads::ChangeTags),
        Arc::new(threads::SetCustomers),
        Arc::new(threads::AddComment),
        Arc::new(lifecycle::Transition),
        Arc::new(lifecycle::FireTimer),
        Arc::new(outbound::ComposeMessage),
        Arc::new(outbound::SendMail),
        Arc::new(inbound::StoreRawMail),
        Arc::new(inbound::ParseMail),
        Arc::new(inbound::DedupeMail),
        Arc::new(inbound::CheckLoop),
        Arc::new(inbound::MatchBounce),
        Arc::new(inbound::DiscardMail),
        Arc::new(inbound::UpsertSender),
        Arc::new(inbound::MatchThread),
        Arc::new(inbound::StoreMessage),
        Arc::new(notify::QueueMessage),
        Arc::new(events::EmitEvent),
        Arc::new(flow::Stop),
    ]
}

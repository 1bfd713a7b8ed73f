//! The built-in actions, one module per thing they touch.

mod customers;
mod events;
mod flow;
mod lifecycle;
mod outbound;
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
        Arc::new(events::EmitEvent),
        Arc::new(flow::Stop),
    ]
}

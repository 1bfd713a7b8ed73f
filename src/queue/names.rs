//! Exchange and queue names of the public contract, all under the configured prefix.

use std::time::Duration;

/// The names for one prefix (`GOCHAT_AMQP_PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Direct exchange jobs are published to; routing key = job kind.
    pub fn jobs_exchange(&self) -> String {
        format!("{}gochat.jobs", self.prefix)
    }

    /// The durable queue of one job kind.
    pub fn queue(&self, kind: &str) -> String {
        format!("{}gochat.{kind}", self.prefix)
    }

    pub fn dead_letters(&self) -> String {
        format!("{}gochat.dead", self.prefix)
    }

    /// Topic exchange of the CloudEvents other tools listen to.
    pub fn events_exchange(&self) -> String {
        format!("{}gochat.events", self.prefix)
    }

    /// Headers exchange routing a retried job to the queue of its delay.
    pub fn retry_exchange(&self) -> String {
        format!("{}gochat.retry", self.prefix)
    }

    /// The queue holding jobs for `delay` before they return to their kind's queue. Named by
    /// the delay, not the rung, because a queue's TTL cannot change once declared: editing
    /// the ladder then declares new queues instead of failing on the old ones.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}gochat.retry.{}ms", self.prefix, delay.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names() {
        let n = Names::new("");
        assert_eq!(n.jobs_exchange(), "gochat.jobs");
        assert_eq!(n.queue("inbound-mail"), "gochat.inbound-mail");
        assert_eq!(n.dead_letters(), "gochat.dead");
        assert_eq!(n.events_exchange(), "gochat.events");
        let p = Names::new("staging.");
        assert_eq!(
            p.queue("delayed-reminder"),
            "staging.gochat.delayed-reminder"
        );
        assert_eq!(
            p.retry_queue(Duration::from_secs(10)),
            "staging.gochat.retry.10000ms"
        );
    }
}

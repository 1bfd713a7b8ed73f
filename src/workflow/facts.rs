//! Facts: the named values a workflow run knows about its job (`job.*`, from the payload) and
//! what its steps found out (`thread.status`, `customer.created`, ...). Conditions read them;
//! actions read and write them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::jobs::Job;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    values: BTreeMap<String, Value>,
}

impl Facts {
    /// `job.<field>` for each top-level payload field, and the envelope's `meta.message_id`,
    /// `meta.kind` and `meta.attempt`. A field sent as `null` is present (with value null): "unassign" differs
    /// from "leave the assignee alone".
    pub fn for_job(job: &Job) -> Facts {
        let mut facts = Facts::default();
        if let Some(fields) = job.payload.as_object() {
            for (k, v) in fields {
                facts.set(format!("job.{k}"), v.clone());
            }
        }
        facts.set("meta.message_id", Value::String(job.message_id.clone()));
        facts.set("meta.kind", Value::String(job.kind.clone()));
        facts.set("meta.attempt", Value::from(job.attempt));
        facts
    }

    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), value);
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The fact as a string, if it is one.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// A list fact as strings (non-strings are skipped); empty when absent.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(crate::store::json_strings)
            .unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.values.iter()
    }
}

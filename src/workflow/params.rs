//! A step's parameters, checked against its action's declaration at load time, with
//! defaults filled in; typed getters for the actions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::jobs::JobError;

/// A step's parameters after checking, with defaults filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, Value>,
}

impl Params {
    pub(crate) fn new(values: BTreeMap<String, Value>) -> Self {
        Params { values }
    }

    /// The parameter's value, if set.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn get(&self, name: &str) -> Result<&Value, JobError> {
        self.value(name)
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not set")))
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Result<&str, JobError> {
        self.get(name)?
            .as_str()
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not a string")))
    }

    pub fn bool(&self, name: &str) -> Result<bool, JobError> {
        self.get(name)?
            .as_bool()
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not a boolean")))
    }

    pub fn int(&self, name: &str) -> Result<i64, JobError> {
        self.get(name)?
            .as_i64()
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not an integer")))
    }

    pub fn duration(&self, name: &str) -> Result<Duration, JobError> {
        humantime::parse_duration(self.str(name)?)
            .map_err(|e| JobError::permanent(format!("parameter `{name}`: {e}")))
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>, JobError> {
        let v = self.get(name)?;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .ok_or_else(|| JobError::permanent(format!("parameter `{name}` is not a list")))
    }
}

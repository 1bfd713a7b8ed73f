//! The JSON Schemas of the job payloads (`schemas/<kind>.v1.json`), compiled into the binary
//! so the worker and `gochat publish` check a payload the same way wherever they run.
//! The workflow loader also reads them (`crate::workflow::job_facts`): a payload's
//! top-level fields are the `job.*` facts.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

use super::JobError;

/// `(kind, schema text)` for every job kind.
pub const SCHEMAS: &[(&str, &str)] = &[
    (
        "inbound-mail",
        include_str!("../../schemas/inbound-mail.v1.json"),
    ),
    (
        "outbound-message",
        include_str!("../../schemas/outbound-message.v1.json"),
    ),
    (
        "status-transition",
        include_str!("../../schemas/status-transition.v1.json"),
    ),
    (
        "delayed-reminder",
        include_str!("../../schemas/delayed-reminder.v1.json"),
    ),
    (
        "thread-update",
        include_str!("../../schemas/thread-update.v1.json"),
    ),
    (
        "customer-upsert",
        include_str!("../../schemas/customer-upsert.v1.json"),
    ),
];

struct Compiled {
    validator: Validator,
    /// The schema itself, for what else reads it (the workflow loader's `job.*` facts).
    schema: Value,
}

/// Compiled once; a schema that does not compile is a build defect, caught by the tests.
static COMPILED: LazyLock<BTreeMap<&'static str, Result<Compiled, String>>> = LazyLock::new(|| {
    SCHEMAS
        .iter()
        .map(|(kind, text)| (*kind, compile(kind, text)))
        .collect()
});

fn compile(kind: &str, text: &str) -> Result<Compiled, String> {
    let schema: Value =
        serde_json::from_str(text).map_err(|e| format!("schemas/{kind}.v1.json: {e}"))?;
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("schemas/{kind}.v1.json: {e}"))?;
    Ok(Compiled { validator, schema })
}

/// The parsed schema of `kind`, if it compiled.
pub fn schema(kind: &str) -> Option<&'static Value> {
    match COMPILED.get(kind) {
        Some(Ok(c)) => Some(&c.schema),
        _ => None,
    }
}

/// Every schema compiles (checked at start-up and by `gochat check`).
pub fn check_all() -> Result<(), String> {
    for c in COMPILED.values() {
        if let Err(e) = c {
            return Err(e.clone());
        }
    }
    Ok(())
}

/// Checks `payload` against the schema of `kind`. The reason names each offending field.
pub fn validate(kind: &str, payload: &Value) -> Result<(), JobError> {
    let compiled = match COMPILED.get(kind) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            return Err(JobError::permanent(format!(
                "schema for {kind} is broken: {e}"
            )));
        }
        None => return Err(JobError::permanent(format!("unknown job kind {kind:?}"))),
    };
    let problems: Vec<String> = compiled
        .validator
        .iter_errors(payload)
        .take(5)
        .map(|e| {
            let path = e.instance_path.to_string();
            let at = if path.is_empty() {
                "payload".to_owned()
            } else {
                format!("at {path}")
            };
            format!("{at}: {e}")
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(JobError::permanent(format!(
            "payload does not match schemas/{kind}.v1.json: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles_and_covers_every_kind() {
        check_all().unwrap();
        for kind in crate::contract::JOB_KINDS {
            assert!(COMPILED.contains_key(kind), "{kind} has no schema");
        }
    }

    #[test]
    fn violations_name_the_field() {
        let err = validate(
            "customer-upsert",
            &json!({"schema": "customer-upsert/v1", "name": 3}),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(!err.is_transient());
        assert!(
            msg.contains("external_id") && msg.contains("/name"),
            "{msg}"
        );
        validate(
            "customer-upsert",
            &json!({"schema": "customer-upsert/v1", "external_id": "a", "name": "A", "extra": 1}),
        )
        .unwrap();
    }
}

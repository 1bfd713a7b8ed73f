//! The JSON Schemas of the job payloads (`schemas/<kind>.v1.json`), compiled into the binary
//! so the worker and `gochat publish` check a payload the same way wherever they run.
//! The workflow loader also reads them: a payload's top-level fields are the `job.*` facts.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

use super::JobError;
use crate::workflow::spec::{FactSpec, FactType};

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
    facts: Vec<FactSpec>,
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
    Ok(Compiled {
        validator,
        facts: facts_of(&schema),
    })
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

/// The facts a job of `kind` provides before the first step: `job.<field>` per top-level
/// payload property, typed by the schema, and the envelope's `meta.message_id`, `meta.kind`
/// and `meta.attempt` (apart, so a payload field such as outbound-message's `kind` never
/// collides with them).
pub fn job_facts(kind: &str) -> Vec<FactSpec> {
    let mut facts = vec![
        FactSpec {
            name: "meta.message_id",
            ty: FactType::Str,
            doc: "The AMQP message id.",
        },
        FactSpec {
            name: "meta.kind",
            ty: FactType::Str,
            doc: "The job kind.",
        },
        FactSpec {
            name: "meta.attempt",
            ty: FactType::Int,
            doc: "1 on first delivery, +1 per retry.",
        },
    ];
    if let Some(Ok(c)) = COMPILED.get(kind) {
        facts.extend(c.facts.iter().copied());
    }
    facts
}

/// Facts from a schema's top-level properties. Names and enum values are leaked once per
/// process (the schemas are compiled once), so facts stay `&'static` like the actions' own.
fn facts_of(schema: &Value) -> Vec<FactSpec> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, p)| FactSpec {
            name: leak(format!("job.{name}")),
            ty: fact_type(p),
            doc: p
                .get("description")
                .and_then(Value::as_str)
                .map(|d| leak(d.to_owned()))
                .unwrap_or("A payload field."),
        })
        .collect()
}

fn fact_type(p: &Value) -> FactType {
    if let Some(values) = p.get("enum").and_then(Value::as_array) {
        let names: Vec<&'static str> = values
            .iter()
            .filter_map(|v| v.as_str().map(|s| leak(s.to_owned())))
            .collect();
        return FactType::Enum(Box::leak(names.into_boxed_slice()));
    }
    if p.get("const").is_some() || p.get("format").and_then(Value::as_str) == Some("uuid") {
        return if p.get("const").is_some() {
            FactType::Str
        } else {
            FactType::Uuid
        };
    }
    match p.get("type").and_then(Value::as_str) {
        Some("string") => FactType::Str,
        Some("integer") => FactType::Int,
        Some("boolean") => FactType::Bool,
        Some("array") => FactType::List,
        Some("object") => FactType::Object,
        _ => FactType::Any,
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
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
    fn payload_fields_become_typed_facts() {
        let facts = job_facts("status-transition");
        let ty = |n: &str| facts.iter().find(|f| f.name == n).map(|f| f.ty);
        assert_eq!(ty("job.thread_id"), Some(FactType::Uuid));
        assert_eq!(
            ty("job.to"),
            Some(FactType::Enum(&["open", "waiting", "reminder", "closed"]))
        );
        assert_eq!(ty("job.expected_version"), Some(FactType::Int));
        assert_eq!(ty("meta.message_id"), Some(FactType::Str));
        assert_eq!(
            job_facts("thread-update")
                .iter()
                .find(|f| f.name == "job.assignee")
                .map(|f| f.ty),
            Some(FactType::Any)
        );
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

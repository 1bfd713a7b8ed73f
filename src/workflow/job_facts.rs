//! The `job.*` facts of each job kind, read off its payload schema
//! (`crate::jobs::schema::SCHEMAS`): what a workflow's first step can rely on.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

use super::spec::{FactSpec, FactType};

/// Per kind, once per process, from the schemas `crate::jobs::schema` parsed. A schema
/// that does not compile gives no facts here; the worker refuses to start on it anyway
/// (`crate::jobs::schema::check_all`).
static FACTS: LazyLock<BTreeMap<&'static str, Vec<FactSpec>>> = LazyLock::new(|| {
    crate::jobs::schema::SCHEMAS
        .iter()
        .filter_map(|(kind, _)| Some((*kind, facts_of(crate::jobs::schema::schema(kind)?))))
        .collect()
});

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
    if let Some(own) = FACTS.get(kind) {
        facts.extend(own.iter().copied());
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
}

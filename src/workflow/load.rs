//! Reading `workflows/jobs/<kind>.yaml` and checking it against the action registry, so a
//! mistake is found by `gochat check` or at start-up, never by a job in production.
//!
//! Every problem found is reported (not just the first), each with file, line, column and,
//! where one helps, a hint.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::action::Action;
use super::condition::Condition;
use super::params::Params;
use super::registry::Registry;
use super::spec::{FactType, ParamSpec, ParamType};
use super::{Step, Workflow, WorkflowSet};
use crate::contract::JOB_KINDS;
pub use crate::diagnostics::Problem;
use crate::diagnostics::{did_you_mean, first_line};

/// Every problem found in a workflows folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The default of an optional parameter that is simply not set.
pub const UNSET: &str = "~";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    kind: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // documentation for the reader of the YAML
    description: Option<String>,
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    action: Spanned<String>,
    #[serde(default)]
    with: HashMap<Spanned<String>, Spanned<Value>>,
    #[serde(default)]
    when: Option<Spanned<Value>>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

/// Loads every `<dir>/jobs/*.yaml`.
pub fn load_dir(dir: &Path, registry: &Registry) -> Result<WorkflowSet, LoadError> {
    let jobs = dir.join("jobs");
    let mut problems = Vec::new();
    let mut set = WorkflowSet::default();
    let entries = match std::fs::read_dir(&jobs) {
        Ok(e) => e,
        Err(e) => {
            return Err(LoadError {
                problems: vec![Problem {
                    file: jobs.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read the job workflows folder: {e}"),
                    hint: Some("set `workflows.dir` (or GOCHAT_WORKFLOWS) to the folder holding `jobs/<kind>.yaml`".into()),
                }],
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                    hint: None,
                });
                continue;
            }
        };
        match parse(&file, &text, registry) {
            Ok(wf) => {
                set.workflows.insert(wf.kind.clone(), Arc::new(wf));
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(LoadError { problems })
    }
}

/// Parses and checks one workflow file's text.
pub fn parse(file: &Path, text: &str, registry: &Registry) -> Result<Workflow, Vec<Problem>> {
    let at = |line: u64, column: u64, message: String, hint: Option<String>| Problem {
        file: file.to_path_buf(),
        line,
        column,
        message,
        hint,
    };
    let raw: RawWorkflow = match serde_saphyr::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let hint = Some(
                "a job workflow is `kind: <job kind>` and `steps:`, a list of `{name, action, with, when}`; see docs/workflows.md".to_owned(),
            );
            return Err(vec![at(line, column, first_line(&e.to_string()), hint)]);
        }
    };
    let mut problems = Vec::new();
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let kind = raw.kind.value.clone();
    if !JOB_KINDS.contains(&kind.as_str()) {
        problems.push(at(
            raw.kind.referenced.line(),
            raw.kind.referenced.column(),
            format!("unknown job kind `{kind}`"),
            Some(format!(
                "job kinds are {}{}",
                JOB_KINDS.join(", "),
                did_you_mean(&kind, JOB_KINDS.iter().copied())
            )),
        ));
    } else if kind != stem {
        problems.push(at(
            raw.kind.referenced.line(),
            raw.kind.referenced.column(),
            format!("the file is named `{stem}` but declares kind `{kind}`"),
            Some(format!("rename the file to `{kind}.yaml` or fix `kind:`")),
        ));
    }
    if raw.steps.is_empty() {
        problems.push(at(
            raw.kind.referenced.line(),
            raw.kind.referenced.column(),
            "the workflow has no steps".into(),
            None,
        ));
    }

    // Facts known before the first step: the job's payload fields (typed by its schema).
    let mut available: BTreeMap<String, FactType> = super::job_facts::job_facts(&kind)
        .into_iter()
        .map(|f| (f.name.to_owned(), f.ty))
        .collect();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut steps = Vec::new();
    for raw_step in raw.steps {
        let name = raw_step.name.value.clone();
        let (nl, nc) = (
            raw_step.name.referenced.line(),
            raw_step.name.referenced.column(),
        );
        if let Some(first) = seen.get(&name) {
            problems.push(at(
                nl,
                nc,
                format!("duplicate step name `{name}` (first used on line {first})"),
                Some("step names are unique within a workflow: they label logs and metrics".into()),
            ));
        } else {
            seen.insert(name.clone(), nl);
        }
        let action_name = raw_step.action.value.as_str();
        // Problems about the step as a whole point at its `action:`.
        let (al, ac) = (
            raw_step.action.referenced.line(),
            raw_step.action.referenced.column(),
        );
        let Some(action) = registry.get(action_name) else {
            problems.push(at(
                al,
                ac,
                format!("step `{name}`: unknown action `{action_name}`"),
                Some(format!(
                    "actions are {}{}",
                    registry.names().join(", "),
                    did_you_mean(action_name, registry.names().into_iter())
                )),
            ));
            continue;
        };
        let spec = action.spec();

        let when = match &raw_step.when {
            None => None,
            Some(w) => {
                let (wl, wc) = (w.referenced.line(), w.referenced.column());
                match Condition::parse(&w.value).and_then(|c| c.check(&available).map(|_| c)) {
                    Ok(c) => Some(c),
                    Err(msg) => {
                        problems.push(at(wl, wc, format!("step `{name}`: `when`: {msg}"), None));
                        None
                    }
                }
            }
        };

        // Parameters: known, well typed, required ones present; defaults filled in.
        let mut values = BTreeMap::new();
        let mut given: Vec<(&Spanned<String>, &Spanned<Value>)> = raw_step.with.iter().collect();
        given.sort_by_key(|(k, _)| (k.referenced.line(), k.referenced.column()));
        for (key, value) in given {
            let (kl, kc) = (key.referenced.line(), key.referenced.column());
            let Some(param) = spec.param(&key.value) else {
                let known: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
                problems.push(at(
                    kl,
                    kc,
                    format!(
                        "step `{name}`: action `{}` has no parameter `{}`",
                        spec.name, key.value
                    ),
                    Some(if known.is_empty() {
                        format!("`{}` takes no parameters; remove `with:`", spec.name)
                    } else {
                        format!(
                            "its parameters are {}{}",
                            known.join(", "),
                            did_you_mean(&key.value, known.iter().copied())
                        )
                    }),
                ));
                continue;
            };
            let (vl, vc) = (value.referenced.line(), value.referenced.column());
            if value.value.is_null() && param.default == Some(UNSET) {
                continue;
            }
            match check_param(param, &value.value, &available, registry) {
                Ok(()) => {
                    values.insert(param.name.to_owned(), value.value.clone());
                }
                Err(msg) => problems.push(at(
                    vl,
                    vc,
                    format!("step `{name}`: parameter `{}`: {msg}", param.name),
                    None,
                )),
            }
        }
        for param in spec.params {
            if values.contains_key(param.name)
                || raw_step.with.keys().any(|k| k.value == param.name)
            {
                continue;
            }
            match param.default {
                Some(UNSET) => {}
                None => problems.push(at(
                    al,
                    ac,
                    format!(
                        "step `{name}`: action `{}` needs parameter `{}` ({})",
                        spec.name, param.name, param.ty
                    ),
                    Some(format!(
                        "add `with: {{ {}: ... }}`: {}",
                        param.name, param.doc
                    )),
                )),
                Some(default) => {
                    let v: Value = serde_saphyr::from_str(default)
                        .unwrap_or(Value::String(default.to_owned()));
                    match check_param(param, &v, &available, registry) {
                        Ok(()) => {
                            values.insert(param.name.to_owned(), v);
                        }
                        Err(msg) => problems.push(at(al, ac,
                            format!("step `{name}`: parameter `{}` defaults to `{default}`, which does not work here: {msg}", param.name),
                            Some(format!("set `{}` explicitly", param.name)),
                        )),
                    }
                }
            }
        }
        if let Err(msg) = action.validate(&Params::new(values.clone())) {
            problems.push(at(al, ac, format!("step `{name}`: {msg}"), None));
        }
        for read in spec.reads {
            if !available.contains_key(*read) {
                problems.push(at(
                    al,
                    ac,
                    format!(
                        "step `{name}`: action `{}` reads `{read}`, which no earlier step provides",
                        spec.name
                    ),
                    Some(providers(registry, read)),
                ));
            }
        }
        for w in spec.writes {
            available.insert(w.name.to_owned(), w.ty);
        }
        steps.push(Step::new(
            name,
            Arc::clone(action) as Arc<dyn Action>,
            Params::new(values),
            when,
        ));
    }
    if problems.is_empty() {
        Ok(Workflow {
            kind,
            file: file.to_path_buf(),
            steps,
        })
    } else {
        Err(problems)
    }
}

/// Checks one parameter value against its declared type.
fn check_param(
    p: &ParamSpec,
    v: &Value,
    available: &BTreeMap<String, FactType>,
    registry: &Registry,
) -> Result<(), String> {
    let fact_available = |f: &str| -> Result<(), String> {
        if available.contains_key(f) {
            Ok(())
        } else {
            Err(format!(
                "fact `{f}` is not provided by the job or any earlier step"
            ))
        }
    };
    match (p.ty, v) {
        (ParamType::Str, Value::String(_)) | (ParamType::Bool, Value::Bool(_)) => Ok(()),
        (ParamType::Int, Value::Number(n)) if n.is_i64() => Ok(()),
        (ParamType::Duration, Value::String(s)) => humantime::parse_duration(s)
            .map(|_| ())
            .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `90s`, `15m`, `3d`")),
        (ParamType::StrList, Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
        (ParamType::Enum(values), Value::String(s)) => {
            if values.contains(&s.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "`{s}` is not one of {}{}",
                    values.join(", "),
                    did_you_mean(s, values.iter().copied())
                ))
            }
        }
        (ParamType::Fact, Value::String(f)) => fact_available(f),
        (ParamType::Template, Value::String(t)) => match registry.templates() {
            Some(known) if !known.contains(t) => Err(format!(
                "no template `{t}` in workflows/templates/{}",
                did_you_mean(t, known.iter().map(String::as_str))
            )),
            _ => Ok(()),
        },
        (ParamType::FactList, Value::Array(items)) => {
            items.iter().try_for_each(|i| match i.as_str() {
                Some(f) => fact_available(f),
                None => Err(format!(
                    "expected a list of fact names, found {} in it",
                    json_type(i)
                )),
            })
        }
        (t, v) => Err(format!("expected {t}, found {}", json_type(v))),
    }
}

/// Which actions write `fact`, as a hint.
fn providers(registry: &Registry, fact: &str) -> String {
    let by: Vec<&str> = registry
        .all()
        .filter(|a| a.spec().writes.iter().any(|w| w.name == fact))
        .map(|a| a.spec().name)
        .collect();
    if by.is_empty() {
        format!("`{fact}` comes from the job's payload; check the field name against schemas/")
    } else {
        format!("add a step with action {} before this one", by.join(" or "))
    }
}

/// The JSON type of `v`, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

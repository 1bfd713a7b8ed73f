//! `when:` conditions: structured matchers rather than an expression language, so that YAML
//! tooling, the loader's type checks and the error messages all work on plain data.
//!
//! ```yaml
//! when: customer.created                       # a boolean fact is true
//! when: { fact: thread.status, equals: closed }
//! when: { fact: thread.status, in: [waiting, reminder] }
//! when: { fact: job.assignee, exists: true }   # present in the payload, even as null
//! when: { fact: job.tags_add, contains: urgent }
//! when: { all: [ ..., ... ] }                  # also `any: [...]` and `not: {...}`
//! ```

use std::collections::BTreeMap;

use serde_json::Value;

use super::facts::Facts;
use super::spec::FactType;

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The boolean fact is true.
    IsTrue(String),
    Equals(String, Value),
    NotEquals(String, Value),
    In(String, Vec<Value>),
    Exists(String, bool),
    Contains(String, Value),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

const OPERATORS: &[&str] = &["equals", "not_equals", "in", "exists", "contains"];

impl Condition {
    /// Parses the YAML form; the error says what is wrong and how a valid one looks.
    pub fn parse(v: &Value) -> Result<Condition, String> {
        match v {
            Value::String(fact) => Ok(Condition::IsTrue(fact.clone())),
            Value::Object(map) => {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                if let Some(combinator) =
                    ["all", "any", "not"].iter().find(|k| map.contains_key(**k))
                {
                    if map.len() != 1 {
                        return Err(format!(
                            "`{combinator}` stands alone in its mapping, found also {}",
                            others(&keys, combinator)
                        ));
                    }
                    let inner = &map[*combinator];
                    return match (*combinator, inner) {
                        ("not", inner) => Ok(Condition::Not(Box::new(Condition::parse(inner)?))),
                        (c, Value::Array(items)) if !items.is_empty() => {
                            let parsed = items
                                .iter()
                                .map(Condition::parse)
                                .collect::<Result<Vec<_>, _>>()?;
                            Ok(if c == "all" {
                                Condition::All(parsed)
                            } else {
                                Condition::Any(parsed)
                            })
                        }
                        (c, _) => Err(format!("`{c}` takes a non-empty list of conditions")),
                    };
                }
                let Some(fact) = map.get("fact") else {
                    return Err(format!(
                        "a condition is a fact name, or a mapping with `fact` and one of {}, or `all`/`any`/`not`; found keys {}",
                        OPERATORS.join(", "),
                        keys.join(", ")
                    ));
                };
                let Some(fact) = fact.as_str() else {
                    return Err("`fact` must be a fact name (a string)".into());
                };
                let ops: Vec<&str> = keys.iter().copied().filter(|k| *k != "fact").collect();
                let [op] = ops.as_slice() else {
                    return Err(format!(
                        "condition on `{fact}` needs exactly one operator ({}), found {}",
                        OPERATORS.join(", "),
                        if ops.is_empty() {
                            "none".to_owned()
                        } else {
                            ops.join(", ")
                        }
                    ));
                };
                let arg = &map[*op];
                let fact = fact.to_owned();
                match *op {
                    "equals" => Ok(Condition::Equals(fact, arg.clone())),
                    "not_equals" => Ok(Condition::NotEquals(fact, arg.clone())),
                    "contains" => Ok(Condition::Contains(fact, arg.clone())),
                    "in" => match arg {
                        Value::Array(items) if !items.is_empty() => {
                            Ok(Condition::In(fact, items.clone()))
                        }
                        _ => Err(format!("`in` on `{fact}` takes a non-empty list")),
                    },
                    "exists" => match arg {
                        Value::Bool(b) => Ok(Condition::Exists(fact, *b)),
                        _ => Err(format!("`exists` on `{fact}` takes true or false")),
                    },
                    other => Err(format!(
                        "unknown operator `{other}` on `{fact}`; use one of {}",
                        OPERATORS.join(", ")
                    )),
                }
            }
            other => Err(format!(
                "a condition is a fact name or a mapping, found {}",
                super::load::json_type(other)
            )),
        }
    }

    /// Checks every fact it reads is available and every literal fits the fact's type.
    pub fn check(&self, available: &BTreeMap<String, FactType>) -> Result<(), String> {
        let ty = |fact: &str| -> Result<FactType, String> {
            available.get(fact).copied().ok_or_else(|| {
                format!(
                    "the condition reads `{fact}`, which no earlier step provides (available: {})",
                    available.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        };
        match self {
            Condition::IsTrue(f) => match ty(f)? {
                FactType::Bool | FactType::Any => Ok(()),
                t => Err(format!(
                    "`when: {f}` needs a boolean fact, `{f}` is {t}; compare it with `{{fact: {f}, equals: ...}}`"
                )),
            },
            Condition::Equals(f, v) | Condition::NotEquals(f, v) => fits(f, ty(f)?, v),
            Condition::In(f, vs) => {
                let t = ty(f)?;
                vs.iter().try_for_each(|v| fits(f, t, v))
            }
            Condition::Exists(f, _) => ty(f).map(|_| ()),
            Condition::Contains(f, v) => match ty(f)? {
                FactType::List | FactType::Any => match v {
                    Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
                    _ => Err(format!("`contains` on `{f}` takes a scalar")),
                },
                t => Err(format!("`contains` needs a list fact, `{f}` is {t}")),
            },
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter().try_for_each(|c| c.check(available))
            }
            Condition::Not(c) => c.check(available),
        }
    }

    /// Every fact the condition reads.
    pub fn facts(&self) -> Vec<&str> {
        match self {
            Condition::IsTrue(f)
            | Condition::Equals(f, _)
            | Condition::NotEquals(f, _)
            | Condition::In(f, _)
            | Condition::Exists(f, _)
            | Condition::Contains(f, _) => vec![f.as_str()],
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter().flat_map(Condition::facts).collect()
            }
            Condition::Not(c) => c.facts(),
        }
    }

    pub fn eval(&self, facts: &Facts) -> bool {
        match self {
            Condition::IsTrue(f) => facts.get(f) == Some(&Value::Bool(true)),
            Condition::Equals(f, v) => facts.get(f) == Some(v),
            Condition::NotEquals(f, v) => facts.get(f) != Some(v),
            Condition::In(f, vs) => facts.get(f).is_some_and(|x| vs.contains(x)),
            Condition::Exists(f, want) => facts.get(f).is_some() == *want,
            Condition::Contains(f, v) => facts
                .get(f)
                .and_then(Value::as_array)
                .is_some_and(|a| a.contains(v)),
            Condition::All(cs) => cs.iter().all(|c| c.eval(facts)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(facts)),
            Condition::Not(c) => !c.eval(facts),
        }
    }
}

fn others(keys: &[&str], except: &str) -> String {
    keys.iter()
        .filter(|k| **k != except)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Does literal `v` fit a fact of type `t`?
fn fits(fact: &str, t: FactType, v: &Value) -> Result<(), String> {
    let ok = match (t, v) {
        (FactType::Any, _) => true,
        (_, Value::Null) => true,
        (FactType::Bool, Value::Bool(_)) => true,
        (FactType::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (FactType::Str | FactType::Uuid, Value::String(_)) => true,
        (FactType::Enum(values), Value::String(s)) => {
            if values.contains(&s.as_str()) {
                true
            } else {
                return Err(format!(
                    "`{fact}` is never {s:?}; it is one of {}",
                    values.join(", ")
                ));
            }
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{fact}` is {t}, but the condition compares it with {}",
            super::load::json_type(v)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn available() -> BTreeMap<String, FactType> {
        BTreeMap::from([
            (
                "thread.status".to_owned(),
                FactType::Enum(crate::contract::STATUSES),
            ),
            ("customer.created".to_owned(), FactType::Bool),
            ("job.tags_add".to_owned(), FactType::List),
            ("job.assignee".to_owned(), FactType::Any),
        ])
    }

    fn facts() -> Facts {
        let mut f = Facts::default();
        f.set("thread.status", json!("waiting"));
        f.set("customer.created", json!(true));
        f.set("job.tags_add", json!(["urgent", "vip"]));
        f.set("job.assignee", Value::Null);
        f
    }

    fn cond(v: Value) -> Condition {
        let c = Condition::parse(&v).unwrap();
        c.check(&available()).unwrap();
        c
    }

    #[test]
    fn matchers_evaluate_over_facts() {
        let f = facts();
        assert!(cond(json!("customer.created")).eval(&f));
        assert!(cond(json!({"fact": "thread.status", "equals": "waiting"})).eval(&f));
        assert!(!cond(json!({"fact": "thread.status", "not_equals": "waiting"})).eval(&f));
        assert!(cond(json!({"fact": "thread.status", "in": ["reminder", "waiting"]})).eval(&f));
        assert!(cond(json!({"fact": "job.assignee", "exists": true})).eval(&f));
        assert!(cond(json!({"fact": "job.tags_add", "contains": "vip"})).eval(&f));
        assert!(!cond(json!({"fact": "job.tags_add", "contains": "spam"})).eval(&f));
        assert!(cond(json!({"all": ["customer.created", {"not": {"fact": "thread.status", "equals": "open"}}]})).eval(&f));
        assert!(!cond(json!({"any": [{"fact": "thread.status", "equals": "open"}, {"fact": "thread.status", "equals": "closed"}]})).eval(&f));
        let empty = Facts::default();
        assert!(!cond(json!({"fact": "job.assignee", "exists": true})).eval(&empty));
    }

    #[test]
    fn malformed_conditions_are_explained() {
        let err = |v: Value| Condition::parse(&v).unwrap_err();
        assert!(err(json!({"fact": "a"})).contains("exactly one operator"));
        assert!(err(json!({"fact": "a", "equals": 1, "in": [1]})).contains("exactly one operator"));
        assert!(err(json!({"fact": "a", "greater": 1})).contains("unknown operator `greater`"));
        assert!(err(json!({"all": []})).contains("non-empty list"));
        assert!(err(json!({"not": "a", "fact": "b"})).contains("stands alone"));
        assert!(err(json!(3)).contains("found number"));
    }

    #[test]
    fn type_errors_name_the_fact_and_the_allowed_values() {
        let check = |v: Value| {
            Condition::parse(&v)
                .unwrap()
                .check(&available())
                .unwrap_err()
        };
        let e = check(json!({"fact": "thread.status", "equals": "shut"}));
        assert!(
            e.contains("never \"shut\"") && e.contains("open, waiting, reminder, closed"),
            "{e}"
        );
        let e = check(json!({"fact": "customer.created", "equals": "yes"}));
        assert!(
            e.contains("`customer.created` is boolean") && e.contains("string"),
            "{e}"
        );
        let e = check(json!({"fact": "thread.id", "exists": true}));
        assert!(e.contains("no earlier step provides"), "{e}");
        let e = check(json!("thread.status"));
        assert!(e.contains("needs a boolean fact"), "{e}");
    }
}

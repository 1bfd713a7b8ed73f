//! What an action declares about itself: its parameters, the facts it reads and the facts it
//! writes. The loader checks workflows against these declarations and `gochat workflows
//! actions` prints them, so the reference in `docs/workflow-actions.md` cannot drift from
//! the code.

use std::fmt;

/// The type of a fact, as conditions and parameters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactType {
    Bool,
    Int,
    Str,
    Uuid,
    /// A string from a fixed set.
    Enum(&'static [&'static str]),
    /// A JSON array.
    List,
    /// A JSON object.
    Object,
    /// Anything (a payload field the schema leaves open).
    Any,
}

impl fmt::Display for FactType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FactType::Bool => f.write_str("boolean"),
            FactType::Int => f.write_str("integer"),
            FactType::Str => f.write_str("string"),
            FactType::Uuid => f.write_str("uuid"),
            FactType::Enum(values) => write!(f, "one of {}", values.join("|")),
            FactType::List => f.write_str("list"),
            FactType::Object => f.write_str("object"),
            FactType::Any => f.write_str("any"),
        }
    }
}

/// A fact an action writes (or a job provides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactSpec {
    pub name: &'static str,
    pub ty: FactType,
    pub doc: &'static str,
}

/// The type of an action parameter in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Str,
    Bool,
    Int,
    /// A humantime duration such as `3d` or `90s`.
    Duration,
    /// A list of strings.
    StrList,
    /// A string from a fixed set.
    Enum(&'static [&'static str]),
    /// The name of a fact that must be available when the step runs.
    Fact,
    /// A list of fact names, each available when the step runs.
    FactList,
    /// The name of a message template (`workflows/templates/<name>/`).
    Template,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Str => f.write_str("string"),
            ParamType::Bool => f.write_str("boolean"),
            ParamType::Int => f.write_str("integer"),
            ParamType::Duration => f.write_str("duration (e.g. `90s`, `3d`)"),
            ParamType::StrList => f.write_str("list of strings"),
            ParamType::Enum(values) => write!(f, "one of {}", values.join("|")),
            ParamType::Fact => f.write_str("fact name"),
            ParamType::FactList => f.write_str("list of fact names"),
            ParamType::Template => f.write_str("template name"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// The YAML value used when the parameter is left out; `None` makes it required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// An action's declaration.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [ParamSpec],
    /// Facts that must be available before the step runs (besides those its parameters name).
    pub reads: &'static [&'static str],
    pub writes: &'static [FactSpec],
}

impl ActionSpec {
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

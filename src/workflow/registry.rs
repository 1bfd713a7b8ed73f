//! The closed set of built-in actions a workflow may call. Adding an action is a code change
//! (reviewed, tested); using, ordering and parameterising them is configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::action::Action;
use super::actions;

pub struct Registry {
    actions: BTreeMap<&'static str, Arc<dyn Action>>,
    /// The message templates `template` parameters may name; `None` when the folder is not
    /// known (a single file checked on its own), and then they are not checked.
    templates: Option<BTreeSet<String>>,
}

impl Registry {
    /// Every built-in action.
    pub fn builtin() -> Registry {
        let mut r = Registry {
            actions: BTreeMap::new(),
            templates: None,
        };
        for a in actions::all() {
            r.actions.insert(a.spec().name, a);
        }
        r
    }

    /// The same actions, checking `template` parameters against `names`.
    pub fn with_templates<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Registry {
        self.templates = Some(names.into_iter().map(str::to_owned).collect());
        self
    }

    pub fn templates(&self) -> Option<&BTreeSet<String>> {
        self.templates.as_ref()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Action>> {
        self.actions.get(name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.actions.keys().copied().collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Action>> {
        self.actions.values()
    }
}

//! The closed set of built-in actions a workflow may call. Adding an action is a code change
//! (reviewed, tested); using, ordering and parameterising them is configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::action::Action;
use super::actions;

pub struct Registry {
    actions: BTreeMap<&'static str, Arc<dyn Action>>,
}

impl Registry {
    /// Every built-in action.
    pub fn builtin() -> Registry {
        let mut r = Registry {
            actions: BTreeMap::new(),
        };
        for a in actions::all() {
            r.actions.insert(a.spec().name, a);
        }
        r
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

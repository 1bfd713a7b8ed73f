//! What nearly every action file uses, imported once with
//! `use crate::workflow::actions::prelude::*;`.

pub(in crate::workflow::actions) use serde_json::{Value, json};

pub(in crate::workflow::actions) use crate::jobs::{Job, JobError};
pub(in crate::workflow::actions) use crate::workflow::Facts;
pub(in crate::workflow::actions) use crate::workflow::action::{Action, Flow, Flows, Form, cut_at};
pub(in crate::workflow::actions) use crate::workflow::context::{Batch, JobState, StepContext};
pub(in crate::workflow::actions) use crate::workflow::params::Params;
pub(in crate::workflow::actions) use crate::workflow::spec::{
    ActionSpec, FactSpec, FactType, ParamSpec, ParamType,
};

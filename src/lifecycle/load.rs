//! Reading `workflows/lifecycles/*.yaml` and checking each against what it refers to: the
//! four statuses, durations, templates under `workflows/templates/`, the cron expression
//! and time zone of its send window. Every problem found is reported with file:line:column.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use gochat_entities::threads::ThreadStatus;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::{
    ClosedReply, EventRule, EventTarget, FinalStep, Ladder, LadderStep, Lifecycle, Lifecycles,
    Selector, SendWindow, parse_duration, parse_status, status_name,
};
use crate::contract::STATUSES;
use crate::diagnostics::{Problem, did_you_mean, first_line};

/// Longest delay a ladder step may have; longer is almost surely a typo (`30d` vs `300d`).
const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    name: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // for the reader of the YAML
    description: Option<String>,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    selector: Option<RawSelector>,
    statuses: HashMap<Spanned<String>, RawStatus>,
    transitions: HashMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    events: HashMap<Spanned<String>, RawEvent>,
    #[serde(default)]
    ladder: Option<RawLadder>,
    #[serde(default)]
    send_window: Option<RawWindow>,
    #[serde(default)]
    closed_reply: Option<Spanned<String>>,
    #[serde(default)]
    closed_outbound: Option<Spanned<String>>,
    #[serde(default)]
    language: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    colour: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    to: Spanned<String>,
    #[serde(default)]
    from: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLadder {
    status: Spanned<String>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    finally: Option<RawFinal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    after: Spanned<String>,
    #[serde(default)]
    template: Option<Spanned<String>>,
    status: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFinal {
    after: Spanned<String>,
    status: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    cron: Spanned<String>,
    timezone: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    mailboxes: Vec<String>,
    #[serde(default)]
    customer: BTreeMap<String, Value>,
}

/// Loads every `<dir>/lifecycles/*.yaml`; templates are looked up in `<dir>/templates/`.
/// A missing folder is no lifecycle at all (the job workflows that need one say so).
pub fn load_dir(dir: &Path) -> Result<Lifecycles, Vec<Problem>> {
    let folder = dir.join("lifecycles");
    let templates = dir.join("templates");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(Lifecycles::default());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut problems = Vec::new();
    let mut list = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => match parse(&file, &text, &templates) {
                Ok(l) => list.push(l),
                Err(mut p) => problems.append(&mut p),
            },
            Err(e) => problems.push(Problem {
                file: file.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
                hint: None,
            }),
        }
    }
    let defaults: Vec<&Lifecycle> = list.iter().filter(|l| l.default).collect();
    if problems.is_empty() && !list.is_empty() && defaults.len() != 1 {
        problems.push(Problem {
            file: folder.clone(),
            line: 0,
            column: 0,
            message: if defaults.is_empty() {
                "no lifecycle is marked `default: true`".to_owned()
            } else {
                format!(
                    "{} lifecycles are marked `default: true`: {}",
                    defaults.len(),
                    defaults
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            hint: Some(
                "exactly one lifecycle takes the threads no selector picks; mark one `default: true`"
                    .into(),
            ),
        });
    }
    if problems.is_empty() {
        Ok(Lifecycles::new(list))
    } else {
        Err(problems)
    }
}

/// Parses and checks one lifecycle file's text.
pub fn parse(file: &Path, text: &str, templates: &Path) -> Result<Lifecycle, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut at = |s: &dyn Located, message: String, hint: Option<String>| {
        problems.push(Problem {
            file: file.to_path_buf(),
            line: s.line(),
            column: s.column(),
            message,
            hint,
        })
    };
    let raw: RawLifecycle = match serde_saphyr::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            return Err(vec![Problem {
                file: file.to_path_buf(),
                line,
                column,
                message: first_line(&e.to_string()),
                hint: Some("a lifecycle has `name`, `statuses`, `transitions`, `events`, `ladder`, `send_window`; see docs/lifecycles.md".into()),
            }]);
        }
    };
    let name = raw.name.value.clone();
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if name != stem {
        at(
            &raw.name,
            format!("the file is named `{stem}` but declares lifecycle `{name}`"),
            Some(format!("rename the file to `{name}.yaml` or fix `name:`")),
        );
    }

    // Statuses: all four, each with a colour.
    let mut colours = BTreeMap::new();
    for (k, v) in &raw.statuses {
        if let Some(s) = status(k, "statuses", &mut at) {
            let c = v.colour.value.trim();
            let ok = c.len() == 7
                && c.starts_with('#')
                && c[1..].chars().all(|ch| ch.is_ascii_hexdigit());
            if !ok {
                at(
                    &v.colour,
                    format!("status `{}`: colour {c:?} is not `#rrggbb`", k.value),
                    None,
                );
            }
            colours.insert(s, c.to_owned());
        }
    }
    for s in STATUSES {
        if parse_status(s).is_some_and(|s| !colours.contains_key(&s)) {
            at(
                &raw.name,
                format!("status `{s}` is not listed under `statuses`"),
                Some("list all four statuses, each with its inbox `colour`".into()),
            );
        }
    }

    // Transitions agents may make.
    let mut transitions: BTreeMap<ThreadStatus, Vec<ThreadStatus>> = BTreeMap::new();
    for (from, tos) in &raw.transitions {
        let Some(f) = status(from, "transitions", &mut at) else {
            continue;
        };
        let list = transitions.entry(f).or_default();
        for to in tos {
            if let Some(t) = status(to, &format!("transitions from `{}`", from.value), &mut at) {
                list.push(t);
            }
        }
    }

    // The ladder.
    let mut ladder = None;
    if let Some(l) = &raw.ladder {
        let entry = status(&l.status, "ladder.status", &mut at);
        let mut steps = Vec::new();
        for (i, s) in l.steps.iter().enumerate() {
            let after = delay(&s.after, &format!("ladder.steps[{}].after", i + 1), &mut at);
            let st = status(
                &s.status,
                &format!("ladder.steps[{}].status", i + 1),
                &mut at,
            );
            let template = s.template.as_ref().map(|t| {
                check_template(t, templates, &mut at);
                t.value.clone()
            });
            if let (Some(after), Some(status)) = (after, st) {
                steps.push(LadderStep {
                    after,
                    template,
                    status,
                });
            }
        }
        let finally = l.finally.as_ref().and_then(|f| {
            let after = delay(&f.after, "ladder.finally.after", &mut at);
            let st = status(&f.status, "ladder.finally.status", &mut at);
            Some(FinalStep {
                after: after?,
                status: st?,
            })
        });
        if l.steps.is_empty() && l.finally.is_none() {
            at(
                &l.status,
                "the ladder has neither `steps` nor `finally`".into(),
                Some("give it at least one step, or remove `ladder`".into()),
            );
        }
        if let Some(status) = entry {
            ladder = Some(Ladder {
                status,
                steps,
                finally,
            });
        }
    }

    // Events.
    let mut events = BTreeMap::new();
    for (ev, rule) in &raw.events {
        let to = if rule.to.value == "ladder" {
            if raw.ladder.is_none() {
                at(
                    &rule.to,
                    format!(
                        "event `{}` goes to the ladder, but there is no `ladder`",
                        ev.value
                    ),
                    None,
                );
            }
            Some(EventTarget::Ladder)
        } else {
            status(&rule.to, &format!("event `{}`", ev.value), &mut at).map(EventTarget::Status)
        };
        let from = match &rule.from {
            Some(list) => list
                .iter()
                .filter_map(|s| status(s, &format!("event `{}` from", ev.value), &mut at))
                .collect(),
            // By default an event applies to any thread that is not closed.
            None => vec![
                ThreadStatus::Open,
                ThreadStatus::Waiting,
                ThreadStatus::Reminder,
            ],
        };
        if let Some(to) = to {
            events.insert(ev.value.clone(), EventRule { to, from });
        }
    }

    let send_window = raw.send_window.as_ref().and_then(|w| {
        match SendWindow::new(&w.cron.value, &w.timezone.value) {
            Ok(sw) => Some(sw),
            Err(super::window::WindowError::TimeZone(tz)) => {
                at(
                    &w.timezone,
                    format!("send_window: unknown time zone {tz:?}"),
                    Some("use an IANA name such as `Europe/Berlin` or `America/New_York`".into()),
                );
                None
            }
            Err(e) => {
                at(
                    &w.cron,
                    format!("send_window: {e}"),
                    Some("five fields: minute hour day-of-month month day-of-week, e.g. `* 9-16 * * Mon-Fri`".into()),
                );
                None
            }
        }
    });

    let closed_reply = match raw.closed_reply.as_ref().map(|s| s.value.as_str()) {
        None | Some("new_thread") => ClosedReply::NewThread,
        Some("reopen") => ClosedReply::Reopen,
        Some(other) => {
            if let Some(s) = &raw.closed_reply {
                at(
                    s,
                    format!("closed_reply: unknown policy `{other}`"),
                    Some("`new_thread` (a new thread linked to the closed one) or `reopen`".into()),
                );
            }
            ClosedReply::NewThread
        }
    };

    let closed_outbound_allowed = match raw.closed_outbound.as_ref().map(|s| s.value.as_str()) {
        None | Some("refuse") => false,
        Some("allow") => true,
        Some(other) => {
            if let Some(s) = &raw.closed_outbound {
                at(
                    s,
                    format!("closed_outbound: unknown policy `{other}`"),
                    Some("`refuse` (the default) or `allow`".into()),
                );
            }
            false
        }
    };

    let selector = raw
        .selector
        .map(|s| Selector {
            tags: s.tags,
            mailboxes: s.mailboxes,
            customer: s.customer,
        })
        .unwrap_or_default();
    if !raw.default && selector.is_empty() {
        at(
            &raw.name,
            format!(
                "lifecycle `{name}` is not the default and has no `selector`, so no thread would follow it"
            ),
            Some(
                "add `selector: {tags: [...]}` (or `mailboxes`, `customer`), or `default: true`"
                    .into(),
            ),
        );
    }

    let lifecycle = Lifecycle {
        name,
        file: file.to_path_buf(),
        default: raw.default,
        selector,
        colours,
        transitions,
        events,
        ladder,
        send_window,
        closed_reply,
        closed_outbound_allowed,
        language: raw
            .language
            .map(|l| l.value)
            .unwrap_or_else(|| "en".to_owned()),
    };

    // Every status must be reachable from `open` (where threads start).
    let unreachable = unreachable(&lifecycle);
    for s in unreachable {
        let key = raw.statuses.keys().find(|k| k.value == status_name(s));
        let loc: &dyn Located = match key {
            Some(k) => k,
            None => &raw.name,
        };
        at(
            loc,
            format!(
                "status `{}` can never be reached from `open`",
                status_name(s)
            ),
            Some("add a transition, an event or a ladder step leading to it".into()),
        );
    }

    if problems.is_empty() {
        Ok(lifecycle)
    } else {
        Err(problems)
    }
}

/// A status name, or a problem naming the known ones.
fn status(s: &Spanned<String>, what: &str, at: &mut Report<'_>) -> Option<ThreadStatus> {
    let v = parse_status(&s.value);
    if v.is_none() {
        at(
            s,
            format!("{what}: unknown status `{}`", s.value),
            Some(format!(
                "statuses are {}{}",
                STATUSES.join(", "),
                did_you_mean(&s.value, STATUSES.iter().copied())
            )),
        );
    }
    v
}

/// A ladder delay: a duration, above zero (a zero delay would fire the next step at once,
/// a loop of reminders without pause), at most a year.
fn delay(s: &Spanned<String>, key: &str, at: &mut Report<'_>) -> Option<std::time::Duration> {
    match parse_duration(&s.value) {
        Ok(d) if d.is_zero() => {
            at(
                s,
                format!("{key}: a step without delay"),
                Some("steps without delay would fire one after another at once; give each a delay such as `3d`".into()),
            );
            None
        }
        Ok(d) if d > MAX_DELAY => {
            at(
                s,
                format!("{key}: {:?} is longer than a year", s.value),
                None,
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            at(s, format!("{key}: {e}"), None);
            None
        }
    }
}

/// A template is a folder `templates/<name>/` with at least `en.subject.hbs` and
/// `en.text.hbs` (English is the last fallback of every language chain).
fn check_template(t: &Spanned<String>, templates: &Path, at: &mut Report<'_>) {
    let folder = templates.join(&t.value);
    let needed = ["en.subject.hbs", "en.text.hbs"];
    if !folder.is_dir() {
        let known: Vec<String> = std::fs::read_dir(templates)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir() && e.file_name() != "partials")
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        at(
            t,
            format!("unknown template `{}`", t.value),
            Some(format!(
                "templates are folders under {}: {}{}",
                templates.display(),
                if known.is_empty() {
                    "none found".to_owned()
                } else {
                    known.join(", ")
                },
                did_you_mean(&t.value, known.iter().map(String::as_str))
            )),
        );
    } else if let Some(missing) = needed.iter().find(|f| !folder.join(f).is_file()) {
        at(
            t,
            format!("template `{}` has no {missing}", t.value),
            Some("every template has English subject and text files (the last fallback)".into()),
        );
    }
}

/// Statuses no transition, event or ladder step leads to from `open`.
fn unreachable(l: &Lifecycle) -> Vec<ThreadStatus> {
    let mut seen = BTreeSet::from([ThreadStatus::Open]);
    let mut todo = vec![ThreadStatus::Open];
    while let Some(s) = todo.pop() {
        let mut next: Vec<ThreadStatus> = l.transitions.get(&s).cloned().unwrap_or_default();
        for rule in l.events.values() {
            if rule.from.contains(&s) {
                match rule.to {
                    EventTarget::Status(t) => next.push(t),
                    EventTarget::Ladder => next.extend(ladder_statuses(l)),
                }
            }
        }
        if let Some(ladder) = &l.ladder
            && next.contains(&ladder.status)
        {
            next.extend(ladder_statuses(l));
        }
        for n in next {
            if seen.insert(n) {
                todo.push(n);
            }
        }
    }
    l.colours
        .keys()
        .copied()
        .filter(|s| !seen.contains(s))
        .collect()
}

fn ladder_statuses(l: &Lifecycle) -> Vec<ThreadStatus> {
    let Some(ladder) = &l.ladder else {
        return vec![];
    };
    let mut v = vec![ladder.status];
    v.extend(ladder.steps.iter().map(|s| s.status));
    v.extend(ladder.finally.iter().map(|f| f.status));
    v
}

/// Where problems go: the thing they are about (for its position), the message, a hint.
type Report<'a> = dyn FnMut(&dyn Located, String, Option<String>) + 'a;

/// Anything with a position in the file.
trait Located {
    fn line(&self) -> u64;
    fn column(&self) -> u64;
}

impl<T> Located for Spanned<T> {
    fn line(&self) -> u64 {
        self.referenced.line()
    }
    fn column(&self) -> u64 {
        self.referenced.column()
    }
}

//! Message templates (Handlebars), registered once at start-up and on reload, never per
//! message.
//!
//! Layout under `workflows/templates/`:
//! - `<name>/<lang>.subject.hbs`, `<name>/<lang>.text.hbs`, optional `<name>/<lang>.html.hbs`;
//!   `en` is required for every template (the last fallback);
//! - `partials/<partial>.hbs`, used as `{{> signature}}`.
//!
//! Strict mode: a variable the data lacks is an error, never an empty string or a literal
//! `{{customer.name}}` in a sent mail. HTML bodies are escaped; subjects and text bodies are
//! not (they are not HTML).

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde_json::Value;

use crate::diagnostics::{Problem, first_line};

/// One rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub language: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unknown template `{0}`")]
    Unknown(String),
    #[error("template `{template}` ({file}): {reason}")]
    Failed {
        template: String,
        file: String,
        reason: String,
    },
}

/// Every template, compiled.
pub struct Templates {
    /// Subjects and text bodies: no HTML escaping.
    plain: Handlebars<'static>,
    /// HTML bodies: escaped by default.
    html: Handlebars<'static>,
    /// Template name → languages it has.
    languages: BTreeMap<String, BTreeSet<String>>,
    /// The templates that may show `quote` (see [`Templates::quotes`]).
    quoting: BTreeSet<String>,
}

const PARTS: [&str; 3] = ["subject", "text", "html"];

/// Variables every render gets (see `compose_message`), for checking templates at load.
const KNOWN_ROOTS: &[&str] = &["thread", "contact", "mail", "author", "quote", "template"];
const KNOWN_VARIABLES: &[&str] = &[
    "thread.id",
    "thread.subject",
    "thread.reply_token",
    "contact.name",
    "contact.address",
    "contact.language (or null)",
    "contact.time_zone (or null)",
    "template.language (the variant rendered)",
    "mail.from_name",
    "mail.from_address",
    "author.kind",
    "author.id",
    "author.name",
    "quote (null, or from, at, text of the customer's latest message)",
];

handlebars::handlebars_helper!(quote_lines: |text: str| {
    text.lines().map(|l| format!("> {l}")).collect::<Vec<_>>().join("\n")
});

impl Default for Templates {
    /// No templates (strict, escaping as described), with the helpers registered:
    /// `quote_lines` prefixes every line with `> ` (for quoted history); `date` writes a
    /// time in the contact's time zone and the template's language (`mail::dates`).
    fn default() -> Self {
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        plain.register_helper("quote_lines", Box::new(quote_lines));
        plain.register_helper("date", Box::new(super::dates::DateHelper));
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_helper("quote_lines", Box::new(quote_lines));
        html.register_helper("date", Box::new(super::dates::DateHelper));
        Templates {
            plain,
            html,
            languages: BTreeMap::new(),
            quoting: BTreeSet::new(),
        }
    }
}

impl Templates {
    /// Loads and compiles `dir` (the `templates/` folder); every problem is reported with
    /// its file and, where Handlebars knows it, line and column.
    pub fn load(dir: &Path) -> Result<Templates, Vec<Problem>> {
        let Templates {
            mut plain,
            mut html,
            mut languages,
            ..
        } = Templates::default();
        // The sources, to tell which templates quote (partials by name, templates by name).
        let mut partial_sources: BTreeMap<String, String> = BTreeMap::new();
        let mut sources: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut problems = Vec::new();
        let problem =
            |file: &Path, line: usize, column: usize, message: String, hint: Option<String>| {
                Problem {
                    file: file.to_path_buf(),
                    line: line as u64,
                    column: column as u64,
                    message,
                    hint,
                }
            };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(Templates {
                plain,
                html,
                languages,
                quoting: BTreeSet::new(),
            });
        };
        let mut folders: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        for folder in folders {
            let name = folder
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            for file in files {
                let Some(fname) = file.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(stem) = fname.strip_suffix(".hbs") else {
                    continue;
                };
                let text = match std::fs::read_to_string(&file) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(problem(&file, 0, 0, format!("cannot read: {e}"), None));
                        continue;
                    }
                };
                if name == "partials" {
                    partial_sources.insert(stem.to_owned(), text.clone());
                    for registry in [&mut plain, &mut html] {
                        if let Err(e) = registry.register_partial(stem, text.as_str()) {
                            let (l, c) = e.pos().unwrap_or((0, 0));
                            problems.push(problem(&file, l, c, first_line(&e.to_string()), None));
                            break;
                        }
                    }
                    continue;
                }
                let Some((lang, part)) = stem.split_once('.').filter(|(_, p)| PARTS.contains(p))
                else {
                    problems.push(problem(
                        &file,
                        0,
                        0,
                        format!("`{fname}` is not `<lang>.subject.hbs`, `<lang>.text.hbs` or `<lang>.html.hbs`"),
                        None,
                    ));
                    continue;
                };
                let key = format!("{name}/{lang}.{part}");
                let registry = if part == "html" {
                    &mut html
                } else {
                    &mut plain
                };
                // A subject is one line: a trailing newline from the editor is not part of it.
                let source = if part == "subject" {
                    text.trim_end()
                } else {
                    text.as_str()
                };
                sources.entry(name.clone()).or_default().push(text.clone());
                match registry.register_template_string(&key, source) {
                    Ok(()) => {
                        languages
                            .entry(name.clone())
                            .or_default()
                            .insert(lang.to_owned());
                    }
                    Err(e) => {
                        let (l, c) = e.pos().unwrap_or((0, 0));
                        problems.push(problem(&file, l, c, first_line(&e.to_string()), None));
                    }
                }
            }
        }
        let templates = Templates {
            plain,
            html,
            languages,
            quoting: quoting(&sources, &partial_sources),
        };
        for (name, langs) in &templates.languages {
            for lang in langs {
                for part in ["subject", "text"] {
                    if !templates
                        .plain
                        .has_template(&format!("{name}/{lang}.{part}"))
                    {
                        problems.push(problem(
                            &dir.join(name).join(format!("{lang}.{part}.hbs")),
                            0,
                            0,
                            format!("template `{name}` has `{lang}` files but no {lang}.{part}.hbs"),
                            Some("each language needs a subject and a text body; the HTML body is optional".into()),
                        ));
                    }
                }
            }
            if !langs.contains("en") {
                problems.push(problem(
                    &dir.join(name),
                    0,
                    0,
                    format!("template `{name}` has no English version"),
                    Some("English is the last fallback of every language chain: add en.subject.hbs and en.text.hbs".into()),
                ));
            }
        }
        if problems.is_empty() {
            problems.extend(templates.check_variables(dir));
        }
        if problems.is_empty() {
            Ok(templates)
        } else {
            Err(problems)
        }
    }

    /// Renders every template with a sample of the variables the worker always provides:
    /// a misspelt one of those (`{{contact.nmae}}`) is found now, by `gochat check`, not by
    /// the first customer. Variables under other names come from a job's `variables` and
    /// can only be checked at render time.
    fn check_variables(&self, dir: &Path) -> Vec<Problem> {
        let sample = serde_json::json!({
            "thread": {"id": "0", "subject": "s", "reply_token": "t"},
            "contact": {"name": "n", "address": "a@b.c", "language": null, "time_zone": null},
            "mail": {"from_name": "n", "from_address": "a@b.c"},
            "author": {"kind": "agent", "id": "1", "name": "n"},
            "quote": {"from": "n", "at": "2026-01-01T00:00:00Z", "text": "t"},
        });
        let mut problems = Vec::new();
        for (name, langs) in &self.languages {
            for lang in langs {
                for part in PARTS {
                    let key = format!("{name}/{lang}.{part}");
                    let registry = if part == "html" {
                        &self.html
                    } else {
                        &self.plain
                    };
                    if !registry.has_template(&key) {
                        continue;
                    }
                    let mut sample = sample.clone();
                    sample["template"] = serde_json::json!({"language": lang});
                    let Err(e) = registry.render(&key, &sample) else {
                        continue;
                    };
                    if let handlebars::RenderErrorReason::MissingVariable(Some(path)) = e.reason()
                        && KNOWN_ROOTS.contains(&path.split('.').next().unwrap_or_default())
                    {
                        problems.push(Problem {
                            file: dir.join(name).join(format!("{lang}.{part}.hbs")),
                            line: e.line_no.unwrap_or(0) as u64,
                            column: e.column_no.unwrap_or(0) as u64,
                            message: format!("unknown variable `{path}`"),
                            hint: Some(format!(
                                "the worker provides {}; others come from the job's `variables`",
                                KNOWN_VARIABLES.join(", ")
                            )),
                        });
                    }
                }
            }
        }
        problems
    }

    pub fn names(&self) -> Vec<&str> {
        self.languages.keys().map(String::as_str).collect()
    }

    /// The first language of `chain` the template has, else English.
    pub fn language_for(&self, name: &str, chain: &[&str]) -> Option<String> {
        let langs = self.languages.get(name)?;
        chain
            .iter()
            .map(|l| l.trim().to_ascii_lowercase())
            .find(|l| langs.contains(l))
            .or_else(|| langs.contains("en").then(|| "en".to_owned()))
    }

    /// Whether template `name` may show `quote` (the customer's latest message), itself or
    /// through a partial: only then does composing a message read that message.
    pub fn quotes(&self, name: &str) -> bool {
        self.quoting.contains(name)
    }

    /// Renders `name` in the first language of `chain` it has (English last).
    pub fn render(
        &self,
        name: &str,
        chain: &[&str],
        data: &Value,
    ) -> Result<Rendered, RenderError> {
        let lang = self
            .language_for(name, chain)
            .ok_or_else(|| RenderError::Unknown(name.to_owned()))?;
        // The variant's language, for helpers such as `date`.
        let mut data = data.clone();
        if let Some(obj) = data.as_object_mut() {
            obj.insert("template".into(), serde_json::json!({"language": lang}));
        }
        let run = |registry: &Handlebars<'static>, part: &str| {
            let key = format!("{name}/{lang}.{part}");
            registry
                .render(&key, &data)
                .map_err(|e| RenderError::Failed {
                    template: name.to_owned(),
                    file: format!("{key}.hbs"),
                    reason: first_line(&e.to_string()),
                })
        };
        let html_key = format!("{name}/{lang}.html");
        Ok(Rendered {
            subject: run(&self.plain, "subject")?,
            text: run(&self.plain, "text")?,
            html: if self.html.has_template(&html_key) {
                Some(run(&self.html, "html")?)
            } else {
                None
            },
            language: lang,
        })
    }
}

/// The templates whose sources may show `quote`: they mention it, or include a partial
/// that does (or one whose name cannot be told from the source, to be safe).
fn quoting(
    sources: &BTreeMap<String, Vec<String>>,
    partials: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let includes = |text: &str, quoting: &BTreeSet<String>| {
        text.split("{{").skip(1).any(|tag| {
            let tag = tag.trim_start_matches('~').trim_start();
            let Some(rest) = tag.strip_prefix('>') else {
                return false;
            };
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'))
                .collect();
            name.is_empty() || !partials.contains_key(&name) || quoting.contains(&name)
        })
    };
    // Partials may include partials: grow the set until it holds still.
    let mut quoting_partials = BTreeSet::new();
    loop {
        let grown: BTreeSet<String> = partials
            .iter()
            .filter(|(_, text)| text.contains("quote") || includes(text, &quoting_partials))
            .map(|(name, _)| name.clone())
            .collect();
        if grown == quoting_partials {
            break;
        }
        quoting_partials = grown;
    }
    sources
        .iter()
        .filter(|(_, texts)| {
            texts
                .iter()
                .any(|t| t.contains("quote") || includes(t, &quoting_partials))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shipped() -> Templates {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/templates"))
            .unwrap_or_else(|p| panic!("{p:#?}"))
    }

    fn data() -> Value {
        json!({
            "thread": {"subject": "Printer <on> fire"},
            "contact": {"name": "Ada"},
            "mail": {"from_name": "Go!Chat Support"},
        })
    }

    #[test]
    fn only_templates_that_show_the_quote_themselves_or_through_a_partial_quote() {
        let t = shipped();
        assert!(
            t.quotes("agent-reply"),
            "through the quoted-history partial"
        );
        for name in ["acknowledgement", "reminder-1", "reminder-2", "unknown"] {
            assert!(!t.quotes(name), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let file = dir.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        };
        write("partials/outer.hbs", "{{~> inner}}");
        write("partials/inner.hbs", "{{#if quote}}{{quote.text}}{{/if}}");
        write("partials/plain.hbs", "Bye");
        for (name, text) in [
            ("direct", "{{quote.from}}"),
            ("nested", "Hi {{> outer}}"),
            ("missing", "Hi {{> nowhere}}"),
            ("plain", "Hi {{> plain}}"),
        ] {
            write(&format!("{name}/en.subject.hbs"), "S");
            write(&format!("{name}/en.text.hbs"), text);
        }
        // Loading reports the missing partial only when rendering; the flag is what counts.
        let t = Templates::load(dir.path()).unwrap_or_else(|p| panic!("{p:#?}"));
        assert!(t.quotes("direct") && t.quotes("nested") && t.quotes("missing"));
        assert!(!t.quotes("plain"));
    }

    #[test]
    fn shipped_templates_render_in_the_contacts_language_with_english_last() {
        let t = shipped();
        let de = t.render("reminder-1", &["de", "en"], &data()).unwrap();
        assert_eq!(de.language, "de");
        assert_eq!(
            de.subject,
            "Re: Printer <on> fire – können wir noch helfen?"
        );
        assert!(de.text.starts_with("Hallo Ada,"), "{}", de.text);
        assert!(
            de.text.contains("Go!Chat Support"),
            "the signature partial: {}",
            de.text
        );
        let fr = t.render("reminder-2", &["fr"], &data()).unwrap();
        assert_eq!(fr.language, "en", "no French: English");
        assert_eq!(fr.subject, "Re: Printer <on> fire — last reminder");
        assert!(matches!(
            t.render("nope", &["en"], &data()),
            Err(RenderError::Unknown(_))
        ));
    }

    #[test]
    fn the_agent_reply_wraps_the_body_and_quotes_the_customers_last_message() {
        let t = shipped();
        let mut d = data();
        d["body"] = json!("The toner is on its way.");
        d["author"] = json!({"kind": "agent", "id": "a1", "name": "Alice"});
        d["quote"] = json!({"from": "Ada", "at": "2026-11-23T10:00:00Z", "text": "Printer on fire.\nPlease help!"});
        let r = t.render("agent-reply", &["en"], &d).unwrap();
        assert!(
            r.text
                .contains("The toner is on its way.\n\nKind regards,\nAlice"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains(
                "Ada, Monday, 23 November 2026, 10:00 UTC:\n> Printer on fire.\n> Please help!"
            ),
            "{}",
            r.text
        );
        // The quote's time in the contact's zone, in the variant's language.
        d["contact"]["time_zone"] = json!("Europe/Berlin");
        let r = t.render("agent-reply", &["de"], &d).unwrap();
        assert!(
            r.text
                .contains("Ada, Montag, 23. November 2026, 11:00 CET:"),
            "{}",
            r.text
        );
        // No earlier message: no quote block, and no error in strict mode.
        d["quote"] = Value::Null;
        let r = t.render("agent-reply", &["de"], &d).unwrap();
        assert!(r.text.starts_with("Hallo Ada,"), "{}", r.text);
        assert!(!r.text.contains("> "), "{}", r.text);
        let ack = t.render("acknowledgement", &["en"], &{
            let mut d = data();
            d["thread"]["reply_token"] = json!("ab12");
            d
        });
        assert_eq!(
            ack.unwrap().subject,
            "[#ab12] We received your request: Printer <on> fire"
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_never_a_blank_or_a_literal() {
        let t = shipped();
        let err = t
            .render("reminder-1", &["en"], &json!({"thread": {"subject": "x"}}))
            .unwrap_err();
        let RenderError::Failed { file, reason, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(file, "reminder-1/en.text.hbs");
        assert!(reason.contains("contact.name"), "{reason}");
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("note");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("en.subject.hbs"), "About {{thread.subject}}\n").unwrap();
        std::fs::write(d.join("en.text.hbs"), "{{thread.subject}}").unwrap();
        std::fs::write(d.join("en.html.hbs"), "<p>{{thread.subject}}</p>").unwrap();
        let t = Templates::load(dir.path()).unwrap_or_else(|p| panic!("{p:#?}"));
        let r = t.render("note", &[], &data()).unwrap();
        assert_eq!(r.subject, "About Printer <on> fire", "one line, unescaped");
        assert_eq!(r.text, "Printer <on> fire");
        assert_eq!(r.html.as_deref(), Some("<p>Printer &lt;on&gt; fire</p>"));
    }

    #[test]
    fn broken_and_incomplete_templates_are_refused_with_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ack");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("en.subject.hbs"), "Hi").unwrap();
        std::fs::write(
            d.join("en.text.hbs"),
            "line one\n{{#if thread}}never closed\n",
        )
        .unwrap();
        std::fs::write(d.join("de.subject.hbs"), "Hallo").unwrap();
        std::fs::write(d.join("en.body.hbs"), "?").unwrap();
        let problems = match Templates::load(dir.path()) {
            Ok(_) => panic!("accepted"),
            Err(p) => p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        let all = problems.join("\n");
        assert!(all.contains("ack/en.text.hbs:"), "{all}");
        assert!(all.contains("`en.body.hbs` is not"), "{all}");
        assert!(all.contains("has `de` files but no de.text.hbs"), "{all}");
    }

    #[test]
    fn a_misspelt_known_variable_is_found_at_load_and_custom_ones_are_left_to_render() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ack");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("en.subject.hbs"), "Ticket {{thread.subject}}").unwrap();
        std::fs::write(
            d.join("en.text.hbs"),
            "Hi {{contact.name}}, order {{order_no}}\n",
        )
        .unwrap();
        Templates::load(dir.path()).unwrap_or_else(|p| panic!("custom variables are fine: {p:#?}"));
        std::fs::write(d.join("en.text.hbs"), "Hi\n{{contact.nmae}}\n").unwrap();
        let p = match Templates::load(dir.path()) {
            Ok(_) => panic!("accepted a misspelt variable"),
            Err(p) => p[0].to_string(),
        };
        assert!(p.contains("ack/en.text.hbs:2:"), "{p}");
        assert!(p.contains("unknown variable `contact.nmae`"), "{p}");
        assert!(p.contains("contact.name"), "the hint lists them: {p}");
    }
}

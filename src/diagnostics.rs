//! Problems found in the files the worker reads at start-up and on reload (workflows,
//! lifecycles, templates), each with file, line, column and, where one helps, a hint. One
//! module for all three, so the loaders share one type and one way of suggesting a name
//! instead of importing each other.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong in a file the worker reads at start-up (a workflow, a lifecycle, a
/// template), where it is and, where one helps, a hint. Shown as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// The first line of `s` (parsers' messages can run to several).
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// `; did you mean `x`?` when a known name is close to `word`.
pub fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .map(|k| (distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_near_misses_only() {
        assert_eq!(distance("send_mial", "send_mail"), 2);
        assert_eq!(
            did_you_mean("send_mial", ["send_mail", "set_status"].into_iter()),
            "; did you mean `send_mail`?"
        );
        assert_eq!(did_you_mean("frobnicate", ["send_mail"].into_iter()), "");
    }
}

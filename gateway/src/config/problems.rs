//! What is wrong with a configuration, collected section by section so that every problem is
//! reported at once; with the readers of sizes and durations every section shares.

use std::time::Duration;

use super::parse_size;

/// The problems found so far, each naming its key.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn extend(&mut self, problems: impl IntoIterator<Item = String>) {
        self.0.extend(problems);
    }

    /// Keeps the problem of a failed check.
    pub fn check(&mut self, result: Result<(), String>) {
        if let Err(problem) = result {
            self.0.push(problem);
        }
    }

    /// The value, or `None` with its problem kept.
    pub fn take<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|problem| self.0.push(problem)).ok()
    }

    /// A size (`512MiB`) at `key`, `default` when absent; 0 with a problem when it is no size.
    pub fn size(&mut self, key: &str, text: Option<&str>, default: &str) -> u64 {
        self.take(parse_size(text.unwrap_or(default)).map_err(|e| format!("{key}: {e}"))).unwrap_or(0)
    }

    /// A size at `key` that must be more than 0.
    pub fn positive_size(&mut self, key: &str, text: Option<&str>, default: &str) -> u64 {
        let size = match parse_size(text.unwrap_or(default)) {
            Ok(0) => Err(format!("{key} must be more than 0")),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("{key}: {e}")),
        };
        self.take(size).unwrap_or(0)
    }

    /// A duration (`30s`, `10m`) at `key`, `default` when absent; zero with a problem when it is
    /// no duration.
    pub fn duration(&mut self, key: &str, text: Option<&str>, default: &str) -> Duration {
        let text = text.unwrap_or(default);
        self.take(humantime::parse_duration(text).map_err(|e| format!("{key} {text:?}: {e}"))).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

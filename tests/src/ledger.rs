//! The cleanup ledger of the fault tests: a file where every `cleanup` of
//! [`GatedWidgetController`](crate::gated::GatedWidgetController) appends a line when it
//! begins and one when it is done, in any replica. Counted per object UID, it tells how many
//! cleanups completed: the exactly-once witness of a failover during deletion.
//!
//! A line is `<begin|done> <identity> <namespace>/<name> <uid>`; each goes out in one
//! `O_APPEND` write, so lines of concurrent processes never interleave.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::{self, Write},
    path::{Path, PathBuf},
};

/// What a ledger line says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A cleanup started (it may still wait for the gate, or be killed).
    Begin,
    /// A cleanup finished; the finalizer's removal comes next.
    Done,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Self::Begin => "begin",
            Self::Done => "done",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "begin" => Some(Self::Begin),
            "done" => Some(Self::Done),
            _ => None,
        }
    }
}

/// One ledger line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What happened.
    pub step: Step,
    /// The replica that ran the cleanup.
    pub identity: String,
    /// `<namespace>/<name>` of the object.
    pub object: String,
    /// The object's UID.
    pub uid: String,
}

/// The ledger file.
#[derive(Clone, Debug)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// The ledger at `path` (created by the first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line.
    ///
    /// # Errors
    /// When the file cannot be opened or the write fails or is short, or a field is empty or
    /// contains whitespace.
    pub fn append(&self, step: Step, identity: &str, object: &str, uid: &str) -> io::Result<()> {
        for field in [identity, object, uid] {
            if field.is_empty() || field.contains(char::is_whitespace) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a ledger field must be one non-empty word, not {field:?}"),
                ));
            }
        }
        let line = format!("{} {identity} {object} {uid}\n", step.as_str());
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        let written = file.write(line.as_bytes())?;
        if written == line.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to the ledger: {written} of {} bytes",
                    line.len()
                ),
            ))
        }
    }

    /// Every line so far; a missing file is an empty ledger.
    ///
    /// # Errors
    /// When the file cannot be read or a line is malformed (the message quotes it).
    pub fn entries(&self) -> Result<Vec<Entry>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(format!("cannot read {}: {error}", self.path.display())),
        };
        parse(&text)
    }

    /// How many cleanups of each object UID completed.
    ///
    /// # Errors
    /// As [`Ledger::entries`].
    pub fn done_by_uid(&self) -> Result<BTreeMap<String, usize>, String> {
        Ok(count(&self.entries()?, Step::Done))
    }
}

/// Parses ledger lines; blank lines are skipped.
///
/// # Errors
/// A message quoting the first malformed line.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            let malformed = || format!("ledger line {} is malformed: {line:?}", number + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let [step, identity, object, uid] = words[..] else {
                return Err(malformed());
            };
            Ok(Entry {
                step: Step::parse(step).ok_or_else(malformed)?,
                identity: identity.to_owned(),
                object: object.to_owned(),
                uid: uid.to_owned(),
            })
        })
        .collect()
}

/// How many entries of `step` each object UID has.
pub fn count(entries: &[Entry], step: Step) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.step == step) {
        *counts.entry(entry.uid.clone()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_parses_and_counts_per_uid() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("ledger"));
        assert_eq!(ledger.entries().unwrap(), vec![]);
        ledger.append(Step::Begin, "a", "ns/w", "u1").unwrap();
        ledger.append(Step::Begin, "b", "ns/w", "u1").unwrap();
        ledger.append(Step::Done, "b", "ns/w", "u1").unwrap();
        ledger.append(Step::Done, "b", "ns/v", "u2").unwrap();
        assert!(
            ledger
                .append(Step::Done, "two words", "ns/v", "u2")
                .is_err()
        );
        let done = ledger.done_by_uid().unwrap();
        assert_eq!(done.get("u1"), Some(&1));
        assert_eq!(done.get("u2"), Some(&1));
        assert_eq!(count(&ledger.entries().unwrap(), Step::Begin)["u1"], 2);
        assert!(parse("finish a ns/w u").unwrap_err().contains("line 1"));
        assert!(parse("done a ns/w").is_err());
    }
}

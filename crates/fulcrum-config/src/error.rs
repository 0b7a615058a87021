//! What is wrong with a configuration, said so that the operator can fix it without
//! reading code: file, line, column, field path and what would be valid, on one line.

use std::{fmt, io, path::PathBuf};

use serde_path_to_error::{Path, Segment};
use serde_saphyr::{Location, MessageFormatter as _};

/// Why no configuration came out of a file. Nothing of an invalid file may be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read the configuration file", path.display())]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid configuration; one line per problem, in file
    /// order. Syntax and type errors stop the parse, so they come alone; the checks after
    /// it report every problem they find.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems found, empty when the file could not be read; for the API, which reports
    /// them one by one.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(problems) => problems,
        }
    }
}

fn lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// One thing wrong with the file, where it is and what would be right. Displays as
/// `FILE:LINE:COLUMN: FIELD: MESSAGE`, the form editors and terminals turn into links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file (or, for [`crate::parse`], whatever name the caller gave the text).
    pub origin: String,
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// The field, as `services[0].health[1].timeout`; empty for the whole document.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// A place in the file, both counted from 1 in characters, as editors count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl Position {
    pub(crate) fn of(location: &Location) -> Option<Self> {
        (location.line() > 0).then(|| Position {
            line: location.line(),
            column: location.column(),
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if let Some(Position { line, column }) = self.position {
            write!(f, "{line}:{column}:")?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Valid backend weights. Maglev gives each backend slots of its 65,537-slot table in
/// proportion to its weight; up to 1000 to 1 the lightest still holds about 65 slots, so
/// shares follow the weights within a few percent. Beyond, they do not.
pub(crate) const WEIGHTS: std::ops::RangeInclusive<u32> = 1..=1000;

/// The one message for a bad weight, whether the YAML layer or the checks found it.
pub(crate) fn weight_problem(found: &str) -> String {
    format!(
        "{} is not a weight; use a whole number from {} to {} (Maglev's 65537-slot table keeps \
         shares proportional up to 1000 to 1; to stop new flows to a backend, set `drain: true`)",
        quote(found),
        WEIGHTS.start(),
        WEIGHTS.end()
    )
}

/// Turns a parse or type error from the YAML layer into a [`Problem`].
pub(crate) fn from_yaml(
    error: &serde_saphyr::Error,
    path: Option<&Path>,
    text: &str,
    origin: &str,
) -> Problem {
    let error = error.without_snippet();
    let location = error.location();
    let found = location.as_ref().and_then(|l| source_text(text, l));
    let field = path.map(field_path).unwrap_or_default();
    let message = match (error, found) {
        (serde_saphyr::Error::InvalidScalar { .. }, Some(found)) if field.ends_with(".weight") => {
            weight_problem(found)
        }
        (serde_saphyr::Error::InvalidScalar { ty, .. }, Some(found)) => {
            format!("{} is not {}", quote(found), expected(ty))
        }
        (serde_saphyr::Error::InvalidScalar { ty, .. }, None) => {
            format!("expected {}", expected(ty))
        }
        (serde_saphyr::Error::InvalidBooleanStrict { .. }, Some(found)) => {
            format!("{} is not {}", quote(found), expected("boolean"))
        }
        (serde_saphyr::Error::Unexpected { expected, .. }, _) => {
            format!("expected {}", structure(expected))
        }
        _ => one_line(&serde_saphyr::UserMessageFormatter.format_message(error)),
    };
    Problem {
        origin: origin.to_owned(),
        position: location.as_ref().and_then(Position::of),
        path: field,
        message,
    }
}

/// The problem of a file that is not UTF-8 text: where the first offending byte is, as the
/// YAML layer would say it, and its offset for `xxd`/`cmp`.
pub(crate) fn not_utf8(bytes: &[u8], error: &std::str::Utf8Error, origin: &str) -> Problem {
    let offset = error.valid_up_to();
    let valid = String::from_utf8_lossy(&bytes[..offset]);
    let line = valid.matches('\n').count() as u64 + 1;
    let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    let byte = bytes.get(offset).copied().unwrap_or_default();
    Problem {
        origin: origin.to_owned(),
        position: Some(Position { line, column }),
        path: String::new(),
        message: format!(
            "byte {byte:#04x} at offset {offset} is not UTF-8 text; the configuration must be a \
             UTF-8 YAML file (is this the right file?)"
        ),
    }
}

/// The field path of a serde error, as the operator writes it. `Spanned` wrappers show up
/// as a `value` field and duplicate keys as an unknown segment; neither is in the file, so
/// both are left out (no field of the configuration is called `value`).
fn field_path(path: &Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key == "value" => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// The text the YAML layer pointed at, to quote it back.
fn source_text<'a>(text: &'a str, location: &Location) -> Option<&'a str> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    text.get(start..start.checked_add(len)?)
        .filter(|s| !s.is_empty())
}

/// A value of the operator's, quoted on one line whatever it contains.
pub(crate) fn quote(value: &str) -> String {
    format!("'{}'", one_line(value))
}

/// `text` with control characters escaped, so that a problem stays one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// What a scalar of Rust type `ty` may be, in the operator's words.
fn expected(ty: &str) -> String {
    match ty {
        "u8" => "a whole number from 0 to 255".to_owned(),
        "u16" => "a whole number from 0 to 65535".to_owned(),
        "u32" => "a whole number from 0 to 4294967295".to_owned(),
        "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "boolean" => "true or false".to_owned(),
        other => format!("a valid {other}"),
    }
}

/// What kind of YAML node was expected, in the operator's words.
fn structure(expected: &str) -> String {
    match expected {
        "sequence start" => "a list (`[a, b]`, or one `- item` per line)".to_owned(),
        "mapping start" | "empty mapping start" => "a mapping (`key: value` lines)".to_owned(),
        "string scalar" | "scalar" => "a single value, not a list or mapping".to_owned(),
        other => other.to_owned(),
    }
}

//! Where each configuration value comes from (the embedded defaults, the config file or a
//! `GRIDWATCH_*` variable), every load problem at once, and the effective configuration as
//! `gridwatch config show` prints it.
//!
//! Serde stops at the first problem of a document. To list them all, the layered values are
//! deserialized again after each problem with the offending key dropped (its default takes
//! its place), so a file with four mistakes is reported with four lines, each naming the
//! key, the file or variable it came from and what was expected.

use std::path::PathBuf;

use figment::error::{Actual, Kind};
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider, Source};

use super::{Config, KAFKA_PROPERTY_VARIABLE_PREFIX};

/// At most this many load problems are listed (each costs one more deserialization).
const MAX_LOAD_PROBLEMS: usize = 64;

/// What `config show` prints instead of a secret.
const REDACTED: &str = "***";

/// Where one configuration value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// The embedded default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable, by name.
    Environment(String),
    /// Read from the file a `*_file` key names (a secret kept out of the config).
    SecretFile(PathBuf),
}

impl std::fmt::Display for ValueSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueSource::Default => formatter.write_str("default"),
            ValueSource::File(path) => write!(formatter, "file {}", path.display()),
            ValueSource::Environment(name) => write!(formatter, "env {name}"),
            ValueSource::SecretFile(path) => write!(formatter, "read from {}", path.display()),
        }
    }
}

/// The layered configuration before it is turned into a [`Config`]: the figment (which
/// knows each value's provider) and its merged values.
#[derive(Debug)]
pub struct Layers {
    figment: Figment,
    root: Dict,
}

impl Layers {
    /// The layers of `figment`; a provider that cannot be read or parsed (a TOML syntax
    /// error) is a list of problems.
    pub fn new(figment: Figment) -> Result<Layers, Vec<String>> {
        // Extracting the merged values as they are fails only when a provider does, and
        // (unlike `data`) names the provider in the error.
        let checked = match figment.extract::<Value>() {
            Ok(_) => figment.data(),
            Err(error) => Err(error),
        };
        match checked {
            Ok(mut profiles) => {
                let root = profiles.remove(&Profile::Default).unwrap_or_default();
                Ok(Layers { figment, root })
            }
            Err(error) => Err(error
                .into_iter()
                .map(|each| {
                    let source =
                        each.metadata
                            .as_ref()
                            .map_or_else(String::new, |metadata| match &metadata.source {
                                Some(Source::File(path)) => format!("{}: ", path.display()),
                                _ => format!("{}: ", metadata.name),
                            });
                    format!("{source}{}", each.kind)
                })
                .collect()),
        }
    }

    /// The configuration with every load problem: each problem's key is dropped (so its
    /// default applies) and the rest deserialized again, until nothing is left to drop.
    /// `None` only when a problem cannot be attributed to a key.
    pub fn extract(&self) -> (Option<Config>, Vec<String>) {
        let mut root = self.root.clone();
        let mut problems = Vec::new();
        while problems.len() < MAX_LOAD_PROBLEMS {
            let error = match Figment::from(Serialized::defaults(&root)).extract::<Config>() {
                Ok(config) => return (Some(config), problems),
                Err(error) => error,
            };
            let mut dropped_any = false;
            for each in error {
                let segments = key_segments(&each);
                problems.push(self.describe(&segments, &each.kind));
                dropped_any |= remove(&mut root, &segments);
            }
            if !dropped_any {
                return (None, problems);
            }
        }
        (None, problems)
    }

    /// Where the value at `segments` comes from.
    pub fn source_of(&self, segments: &[String]) -> ValueSource {
        let metadata =
            value_at(&self.root, segments).and_then(|value| self.figment.get_metadata(value.tag()));
        match metadata {
            Some(metadata) => match &metadata.source {
                Some(Source::File(path)) => ValueSource::File(path.clone()),
                _ if metadata.name.contains("environment") => {
                    ValueSource::Environment(variable_name(segments))
                }
                _ => ValueSource::Default,
            },
            None => ValueSource::Default,
        }
    }

    /// `problem` (a validation problem naming keys) with where its values came from, when
    /// not the defaults: "(file x.toml)" for the first key it names, else "(window.size: env
    /// GRIDWATCH_WINDOW__SIZE)" for the first other key that is not a default.
    pub fn attribute(&self, problem: String) -> String {
        let keys: Vec<Vec<String>> = problem
            .split(|character: char| {
                !(character.is_ascii_alphanumeric() || character == '_' || character == '.')
            })
            .filter(|word| word.contains('.') && !word.starts_with('.'))
            .map(|word| {
                word.trim_end_matches('.')
                    .split('.')
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|segments| value_at(&self.root, segments).is_some())
            .collect();
        let sourced = keys.iter().enumerate().find_map(|(index, segments)| {
            let source = self.source_of(segments);
            (source != ValueSource::Default).then_some((index, segments, source))
        });
        match sourced {
            Some((0, _, source)) => format!("{problem} ({source})"),
            Some((_, segments, source)) => {
                format!("{problem} ({}: {source})", segments.join("."))
            }
            None => problem,
        }
    }

    /// One load problem: the key, what was wrong and expected, and where the value came
    /// from. A value under a key that may hold a secret is described by its shape only.
    fn describe(&self, segments: &[String], kind: &Kind) -> String {
        let key = segments.join(".");
        let lowercase_key = key.to_ascii_lowercase();
        let may_hold_secret = ["key", "secret", "password", "token", "url", "propert"]
            .iter()
            .any(|marker| lowercase_key.contains(marker));
        let shown = |actual: &Actual| {
            if may_hold_secret {
                shape_of(actual).to_string()
            } else {
                show_actual(actual)
            }
        };
        let what = match kind {
            Kind::InvalidType(actual, expected) => format!(
                "invalid type: found {}, expected {}",
                shown(actual),
                plain_expectation(expected)
            ),
            Kind::InvalidValue(actual, expected) => format!(
                "invalid value: found {}, expected {}",
                shown(actual),
                plain_expectation(expected)
            ),
            Kind::InvalidLength(length, expected) => {
                format!("invalid length {length}, expected {expected}")
            }
            Kind::UnknownVariant(found, expected) => {
                let found = if may_hold_secret {
                    "a string".to_string()
                } else {
                    format!("{found:?}")
                };
                format!(
                    "unknown value {found}, expected one of {}",
                    quoted(expected)
                )
            }
            Kind::UnknownField(_, []) => "unknown key (this section takes no keys)".to_string(),
            Kind::UnknownField(_, expected) => {
                format!("unknown key, expected one of {}", expected.join(", "))
            }
            Kind::MissingField(field) => format!("missing key {field}"),
            Kind::Message(_) if may_hold_secret => "invalid value".to_string(),
            Kind::Message(message) => message.clone(),
            other => other.to_string(),
        };
        let key = if key.is_empty() {
            "configuration".to_string()
        } else {
            key
        };
        // A missing key has no source of its own: its table's is the one to fix.
        let source = (1..=segments.len())
            .rev()
            .filter_map(|length| segments.get(..length))
            .map(|prefix| self.source_of(prefix))
            .find(|source| *source != ValueSource::Default);
        match source {
            Some(source) => format!("{key}: {what} ({source})"),
            None => format!("{key}: {what}"),
        }
    }

    /// Every value of `config` (the effective configuration), secrets redacted, with its
    /// source: what `gridwatch config show` prints.
    pub fn show(&self, config: &Config) -> Vec<ShownValue> {
        let mut shown = Vec::new();
        if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(config) {
            for (name, value) in sections {
                self.flatten(vec![name], value, &mut shown);
            }
        }
        shown
    }

    /// Appends the leaves under `segments` to `shown`; tables recurse, lists are one value.
    fn flatten(
        &self,
        segments: Vec<String>,
        value: serde_json::Value,
        shown: &mut Vec<ShownValue>,
    ) {
        match value {
            serde_json::Value::Object(table) if !table.is_empty() => {
                for (name, inner) in table {
                    let mut inner_segments = segments.clone();
                    inner_segments.push(name);
                    self.flatten(inner_segments, inner, shown);
                }
            }
            value => {
                let source = self.effective_source(&segments);
                let value = redact(&segments, value);
                shown.push(ShownValue {
                    key: display_key(&segments),
                    value,
                    source,
                });
            }
        }
    }

    /// The source of the effective value at `segments`, which loading may have taken from
    /// elsewhere than the layers: a `*_file` key's file, a `GRIDWATCH_KAFKA_PROPERTY_*`.
    fn effective_source(&self, segments: &[String]) -> ValueSource {
        if let Some((last, parent)) = segments.split_last() {
            let mut file_key = parent.to_vec();
            file_key.push(format!("{last}_file"));
            if let Some(path) = value_at(&self.root, &file_key).and_then(Value::as_str) {
                return ValueSource::SecretFile(PathBuf::from(path));
            }
            if let [kafka, properties, name] = segments {
                if kafka == "kafka" && properties == "properties" {
                    let mut file_key = vec!["kafka".to_string(), "property_files".to_string()];
                    file_key.push(name.clone());
                    if let Some(path) = value_at(&self.root, &file_key).and_then(Value::as_str) {
                        return ValueSource::SecretFile(PathBuf::from(path));
                    }
                    if value_at(&self.root, segments).is_none() {
                        return ValueSource::Environment(format!(
                            "{KAFKA_PROPERTY_VARIABLE_PREFIX}{}",
                            name.to_ascii_uppercase().replace('.', "_")
                        ));
                    }
                }
            }
        }
        self.source_of(segments)
    }
}

/// One line of `config show`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShownValue {
    /// The dotted key (`window.size`; a name with a dot quoted: `kafka.properties."sasl.mechanism"`).
    pub key: String,
    /// The value, secrets replaced by `***`.
    pub value: serde_json::Value,
    /// Where it comes from.
    #[serde(serialize_with = "serialize_display")]
    pub source: ValueSource,
}

impl std::fmt::Display for ShownValue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match &self.value {
            serde_json::Value::Null => "(unset)".to_string(),
            other => other.to_string(),
        };
        write!(formatter, "{} = {value}  # {}", self.key, self.source)
    }
}

fn serialize_display<S: serde::Serializer>(
    source: &ValueSource,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(source)
}

/// The key path an error is about: the unknown key itself for an unknown field.
fn key_segments(error: &figment::Error) -> Vec<String> {
    let mut segments = error.path.clone();
    if let Kind::UnknownField(field, _) = &error.kind {
        if segments.last() != Some(field) {
            segments.push(field.clone());
        }
    }
    segments
}

/// The value at `segments` under `root`; list items by index.
fn value_at<'a>(root: &'a Dict, segments: &[String]) -> Option<&'a Value> {
    let (first, rest) = segments.split_first()?;
    let mut value = root.get(first)?;
    for segment in rest {
        value = match value {
            Value::Dict(_, table) => table.get(segment)?,
            Value::Array(_, items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Drops the value at `segments` (a whole list item when the path goes through a list);
/// whether anything was dropped.
fn remove(table: &mut Dict, segments: &[String]) -> bool {
    match segments {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove(inner, rest),
            Some(Value::Array(_, items)) => {
                match rest.first().and_then(|index| index.parse::<usize>().ok()) {
                    Some(index) if index < items.len() => {
                        items.remove(index);
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        },
    }
}

/// The variable that sets the key at `segments`: `GRIDWATCH_WINDOW__SIZE`.
fn variable_name(segments: &[String]) -> String {
    let upper: Vec<String> = segments
        .iter()
        .map(|segment| segment.to_ascii_uppercase())
        .collect();
    format!("GRIDWATCH_{}", upper.join("__"))
}

/// The dotted key of `segments`, a segment with a dot or a space quoted.
fn display_key(segments: &[String]) -> String {
    let shown: Vec<String> = segments
        .iter()
        .map(|segment| {
            if segment.chars().all(|character| {
                character.is_ascii_alphanumeric() || matches!(character, '_' | '-')
            }) {
                segment.clone()
            } else {
                format!("{segment:?}")
            }
        })
        .collect();
    shown.join(".")
}

/// `value` with secrets replaced: a key whose last segment names a secret (a password,
/// token, secret or key, not the `*_file` naming one) and credentials in URLs.
fn redact(segments: &[String], value: serde_json::Value) -> serde_json::Value {
    let last = segments.last().map(String::as_str).unwrap_or("");
    let names_secret = !last.ends_with("_file")
        && (crate::secret::is_secret_kafka_property(last) || last.ends_with("_key"));
    redact_value(names_secret, value)
}

fn redact_value(names_secret: bool, value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(text) if names_secret && !text.is_empty() => {
            serde_json::Value::String(REDACTED.to_string())
        }
        serde_json::Value::String(text) if text.contains("://") => {
            serde_json::Value::String(crate::secret::redact_url(&text))
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(|item| redact_value(names_secret, item))
                .collect(),
        ),
        serde_json::Value::Object(table) => serde_json::Value::Object(
            table
                .into_iter()
                .map(|(name, item)| {
                    let secret = names_secret || crate::secret::is_secret_kafka_property(&name);
                    (name, redact_value(secret, item))
                })
                .collect(),
        ),
        other => other,
    }
}

/// A found value as an error shows it: strings quoted, numbers and booleans as they are.
fn show_actual(actual: &Actual) -> String {
    match actual {
        Actual::Bool(value) => value.to_string(),
        Actual::Unsigned(value) => value.to_string(),
        Actual::Signed(value) => value.to_string(),
        Actual::Float(value) => value.to_string(),
        Actual::Char(value) => format!("{value:?}"),
        Actual::Str(value) => format!("{value:?}"),
        other => shape_of(other).to_string(),
    }
}

/// What kind of value `actual` is, without its content.
pub(super) fn shape_of(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a sequence",
        Actual::Map => "a map",
        _ => "a value of another kind",
    }
}

/// What serde expected, in an operator's words rather than Rust's (`usize`).
fn plain_expectation(expected: &str) -> &str {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number, 0 or more",
        "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number",
        "f64" | "f32" => "a number",
        other => other,
    }
}

/// `["a", "b"]` as `"a", "b"`.
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

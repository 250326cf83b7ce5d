//! What `check-config` is given: a config file or a rules file, decided by parsing the TOML
//! and looking at its top-level keys, never by scanning text lines (a `[[rule]] # comment`
//! line is still a rules table).

/// The two kinds of file `check-config` validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A gridwatch config file (`[source]`, `[http]`, ...; possibly empty).
    Config,
    /// A rules file (`[[rule]]`, `[[suppression]]`, `[baseline]`).
    Rules,
}

/// The top-level keys only a rules file has (the config schema denies them).
const RULES_KEYS: [&str; 3] = ["rule", "suppression", "baseline"];

/// The kind of the TOML document `text`, or the syntax error (line and column included) when
/// it is not TOML at all.
pub fn file_kind(text: &str) -> Result<FileKind, String> {
    let table: toml::Table = toml::from_str(text).map_err(|error| error.to_string())?;
    if table.keys().any(|key| RULES_KEYS.contains(&key.as_str())) {
        Ok(FileKind::Rules)
    } else {
        Ok(FileKind::Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_table_with_a_comment_is_a_rules_file() {
        let text = "[baseline]\nweeks = 4\n\n[[rule]] # the fire rule\nname = \"fire\"\n";
        assert_eq!(file_kind(text), Ok(FileKind::Rules));
    }

    #[test]
    fn a_config_file_and_an_empty_file_are_config() {
        assert_eq!(
            file_kind("[http]\nlisten = \"127.0.0.1:9750\"\n"),
            Ok(FileKind::Config)
        );
        assert_eq!(file_kind(""), Ok(FileKind::Config));
    }

    #[test]
    fn broken_toml_is_reported_with_its_position() {
        let error = file_kind("[http\n").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
    }
}

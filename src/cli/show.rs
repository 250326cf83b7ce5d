//! `gridwatch config show`: the effective configuration, one `key = value  # source` line
//! per setting, aligned so that the sources form a column.

use crate::config::ShownValue;

/// Keys with their values wider than this are not padded (the source follows at once).
const MAX_ALIGNED_WIDTH: usize = 64;

/// The lines of `values` under a header that says how the layers stack.
pub fn render(values: &[ShownValue]) -> String {
    let assignments: Vec<String> = values
        .iter()
        .map(|shown| match &shown.value {
            serde_json::Value::Null => format!("# {} (unset)", shown.key),
            value => format!("{} = {value}", shown.key),
        })
        .collect();
    let width = assignments
        .iter()
        .map(|assignment| assignment.chars().count())
        .filter(|width| *width <= MAX_ALIGNED_WIDTH)
        .max()
        .unwrap_or(0);
    let mut text = String::from(
        "# effective configuration: defaults, then the config file, then GRIDWATCH_* variables; secrets print as ***\n",
    );
    for (assignment, shown) in assignments.iter().zip(values) {
        text.push_str(&format!("{assignment:<width$}  # {}\n", shown.source));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ValueSource;

    #[test]
    fn each_line_shows_the_value_and_its_source_in_a_column() {
        let values = vec![
            ShownValue {
                key: "window.size".to_string(),
                value: serde_json::json!("2m"),
                source: ValueSource::Environment("GRIDWATCH_WINDOW__SIZE".to_string()),
            },
            ShownValue {
                key: "rules.path".to_string(),
                value: serde_json::Value::Null,
                source: ValueSource::Default,
            },
        ];
        let text = render(&values);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            format!(
                "{:<20}  # env GRIDWATCH_WINDOW__SIZE",
                "window.size = \"2m\""
            )
        );
        assert_eq!(lines[2], "# rules.path (unset)  # default");
    }
}

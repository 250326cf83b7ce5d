//! The names of the sliding views as the API, the read model and the `view` metric label
//! spell them. (The API itself reads the city-wide read model, `crate::read_model`.)

use std::time::Duration;

use crate::config::Config;

/// Names of the views as the API and the `view` metric label spell them: "15m", "1h", "24h".
pub(crate) fn view_names(config: &Config) -> Vec<String> {
    config
        .window
        .views
        .iter()
        .map(|span| view_name(*span))
        .collect()
}

/// The shortest whole-unit spelling of a view span: hours, else minutes, else seconds.
fn view_name(span: Duration) -> String {
    let seconds = span.as_secs();
    if seconds > 0 && seconds % 3600 == 0 {
        return format!("{}h", seconds / 3600);
    }
    if seconds > 0 && seconds % 60 == 0 {
        return format!("{}m", seconds / 60);
    }
    format!("{seconds}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_names_are_the_short_spellings_the_api_documents() {
        let names: Vec<String> = [900, 3600, 86_400, 90, 5400]
            .into_iter()
            .map(|seconds| view_name(Duration::from_secs(seconds)))
            .collect();
        assert_eq!(names, ["15m", "1h", "24h", "90s", "90m"]);
    }
}

//! External programs the tests need (a broker, Prometheus, Alertmanager): found on PATH, or
//! skipped with a notice — except under `CI=true`, where `.ci/run` must have installed them
//! and a missing one is a test failure.

use std::path::PathBuf;

/// The first of `names` found on PATH; `None` after a skip notice when none is there and CI is
/// unset. Panics under `CI=true`, naming `install_hint` (what `.ci/run` installs).
pub fn tool_on_path(names: &[&str], install_hint: &str) -> Option<PathBuf> {
    let path_variable = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path_variable).find_map(|directory| {
        names
            .iter()
            .map(|name| directory.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_some() {
        return found;
    }
    let under_ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
    assert!(
        !under_ci,
        "CI is set but none of {names:?} is on PATH ({install_hint})"
    );
    println!("skipping: none of {names:?} is installed ({install_hint})");
    None
}

//! Shell completions and the man page, generated from the clap definitions at run time
//! (`gridwatch completions SHELL`, `gridwatch man`), so they can never disagree with the
//! binary that prints them and packaging needs no build step of its own.

use std::io::Write;

/// Shells `gridwatch completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// Bash (source it, or install to /usr/share/bash-completion/completions/gridwatch).
    Bash,
    /// Zsh (install as `_gridwatch` on $fpath).
    Zsh,
    /// Fish (install to ~/.config/fish/completions/gridwatch.fish).
    Fish,
}

/// Writes the completion script of `command` for `shell` to `out`.
pub fn write_completions(command: &mut clap::Command, shell: CompletionShell, out: &mut dyn Write) {
    let name = command.get_name().to_string();
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, command, name, out);
}

/// Writes the man page (roff) of `command` to `out`: the top-level page with every
/// subcommand's synopsis and help, the exit codes included (they are in the help text).
pub fn write_man_page(command: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command).render(out)
}

//! What a package installs beside the binary, made from the command line's own
//! definition so it never drifts from it: shell completions (`twnode completions
//! bash|zsh|fish`, by clap_complete) and man pages for `twnode` and every subcommand
//! (`twnode man DIR`, by clap_mangen).

use std::path::Path;

use anyhow::{Context, Result};
use clap::{CommandFactory, ValueEnum};

use super::Cli;

/// The shells `twnode completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes `shell`'s completion script for `twnode` to stdout.
pub fn completions(shell: Shell) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "twnode", &mut std::io::stdout());
}

/// Writes `twnode.1` and `twnode-<sub>[-<sub>].1` for every subcommand into `dir`
/// (created if missing); returns how many pages.
pub fn man_pages(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    let pages = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_man_page() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        for page in [
            "twnode.1",
            "twnode-daemon.1",
            "twnode-line.1",
            "twnode-line-create.1",
            "twnode-line-show-peer.1",
            "twnode-completions.1",
            "twnode-man.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page))
                .unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(
                text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH"),
                "{page}"
            );
        }
        let create = std::fs::read_to_string(dir.path().join("twnode-line-create.1")).unwrap();
        assert!(create.contains("preshared\\-key"), "{create}");
    }
}

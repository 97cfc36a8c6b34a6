//! The README's examples are what the tool prints: its GRE example and the seed's first
//! scenario (with its second layer) are read from README.md, run as written on two
//! hosts in network namespaces, and what `line create` and `line show-peer` print (the
//! peer commands, the note on what `<parent>` stands for) is compared with the README.
//! The pasted commands then bring the lines up, so the examples also work.

mod common;

use common::node::{seed_pair, shell_words, Node};
use common::require_root_and_tools;

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The fenced `sh` blocks after the first line holding `marker`, each as its commands
/// (a line ending in `\` continues on the next).
fn sh_blocks_after(readme: &str, marker: &str) -> Vec<Vec<String>> {
    let start = readme
        .find(marker)
        .unwrap_or_else(|| panic!("the README no longer says {marker:?}"));
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut pending = String::new();
    for line in readme[start..].lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => {
                if let Some(head) = text.strip_suffix('\\') {
                    pending.push_str(head);
                } else {
                    pending.push_str(text);
                    block.push(std::mem::take(&mut pending));
                }
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The one line of `block` starting with `prefix`.
fn line_starting<'a>(block: &'a [String], prefix: &str) -> &'a str {
    let found: Vec<&String> = block.iter().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "one {prefix:?} line in {block:#?}");
    found[0]
}

/// `sudo twnode ARGS...` as the arguments after `twnode`.
fn twnode_args(command: &str) -> Vec<String> {
    let words = shell_words(command);
    let at = words
        .iter()
        .position(|w| w == "twnode")
        .unwrap_or_else(|| panic!("not a twnode command: {command}"));
    words[at + 1..].to_vec()
}

/// Single-quoted keys shown as the README shows them: `'...'`.
fn keys_elided(command: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in command.chars() {
        if c == '\'' {
            if quoted {
                out.push_str("...'");
            } else {
                out.push('\'');
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

fn run(node: &Node, command: &str) -> String {
    let args = twnode_args(command);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node.cli_ok(&args)
}

#[test]
fn the_readmes_gre_example_prints_the_peer_command_the_readme_shows() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let text = readme();
    let blocks = sh_blocks_after(&text, "IP tunnel lines have no mode and no keys");
    let block = &blocks[0];
    let create = line_starting(block, "sudo twnode line create eth0 ");
    let printed = line_starting(block, "twnode line create <parent> ");

    let (a, b) = seed_pair("readmegre");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    let report = run(&na, create);
    assert!(
        report.lines().any(|l| l == printed),
        "line create printed:\n{report}\nthe README shows:\n{printed}"
    );
    assert!(
        report.contains("replace <parent> with the peer's interface toward this host"),
        "{report}"
    );
    let peer = na.cli_ok(&["line", "show-peer", "gre1"]);
    assert_eq!(peer.trim(), printed, "show-peer against the README");

    nb.paste(printed, "eth0");
    na.wait_state("gre1", "up", 10);
    nb.wait_state("gre1", "up", 10);
    a.run_ok(&["ping", "-c", "1", "-W", "2", "10.9.0.2"]);
}

#[test]
fn the_readmes_seed_scenario_prints_what_the_readme_shows_and_runs() {
    if !require_root_and_tools(&["ip", "ping"]) {
        return;
    }
    let text = readme();
    let blocks = sh_blocks_after(&text, "### The seed's first scenario");
    let base = line_starting(&blocks[0], "sudo twnode line create eth0 ");
    let printed = line_starting(&blocks[1], "twnode line create <parent> ");
    let secure = line_starting(&blocks[2], "sudo twnode line create tunnel_base ");
    // The note the README quotes for the second layer, up to its elided end.
    let scenario = &text[text.find("### The seed's first scenario").unwrap_or(0)..];
    let quoted = scenario
        .split_once("as the note before it says: `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(note, _)| note.split_whitespace().collect::<Vec<_>>().join(" "))
        .expect("the README quotes the second layer's note");
    let note = quoted.trim_end_matches("...)").to_string();

    let (a, b) = seed_pair("readmeseed");
    let na = Node::start(&a);
    let nb = Node::start(&b);
    run(&na, base);
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_base"]);
    assert_eq!(
        keys_elided(peer.trim()),
        printed,
        "show-peer against the README"
    );
    nb.paste(&peer, "eth0");
    na.wait_state("tunnel_base", "up", 10);

    let report = run(&na, secure);
    assert!(
        report.contains(&note),
        "line create printed:\n{report}\nthe README quotes:\n{note}"
    );
    let peer = na.cli_ok(&["line", "show-peer", "tunnel_secure"]);
    nb.paste(&peer, "tunnel_base");
    na.wait_state("tunnel_secure", "up", 10);
    a.run_ok(&["ping", "-c", "1", "-W", "2", "172.16.0.2"]);
}

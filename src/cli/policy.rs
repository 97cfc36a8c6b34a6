//! `twnode policy ...`, `twnode line check`, `twnode line set-cost` and `twnode status`:
//! TrueWord Node's policy grammar, as requests to the daemon, and what they print.
//!
//! Rules: as the rest of the CLI, a thin client of the control socket; `policy import`
//! reads its file here (the daemon never opens a user's file) and refuses it whole,
//! naming the line, if one entry is not a CIDR.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;

use super::output;
use super::{call, Cli};
use crate::config::policy::Cidr;
use crate::control::{
    CheckResult, FailoverEvent, GroupStatus, HealthStatus, NodeStatus, PolicyRequest, PolicyStatus,
    Request, Response, MAX_MESSAGE,
};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a group: its destinations leave through <exit> (`b1,b2`: failover
    /// candidates, preferred first; `b1:2,b2:1`: flows spread by weight)
    Create {
        group: String,
        /// A line, or lines separated by commas (with :weight to balance)
        #[arg(value_name = "EXIT[,EXIT...]")]
        exit: String,
        /// Whose packets: all, an address, a CIDR or an input interface [default: all]
        #[arg(long, value_name = "all|IP|CIDR|IFACE")]
        from: Option<String>,
        /// Rule preference and table, 100-899 [default: the highest in use + 1, from 100]
        #[arg(long, value_name = "N")]
        priority: Option<u32>,
    },
    /// Add destinations (CIDRs, or addresses) to a group
    Add {
        group: String,
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// Remove destinations from a group
    Remove {
        group: String,
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// Add the destinations listed in a file: one CIDR a line, `#` starts a comment
    Import { group: String, file: PathBuf },
    /// The groups, their exits (the active one marked) and the default exit
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Send everything no group takes through <exit> (rule and table 900)
    Default { exit: String },
    /// Remove the default exit
    UnsetDefault,
    /// Install a revoked group again (without a name: every group and the default exit)
    Apply { group: Option<String> },
    /// Take a group off the host, keeping it in the config (without a name: all)
    Revoke { group: Option<String> },
    /// Move a group to another rule priority (new rule first, old one after)
    SetPriority { group: String, priority: u32 },
    /// Delete a group
    Delete { group: String },
    /// Set the exits a group (or `default`) chooses among, preferred first
    Failover {
        #[arg(value_name = "GROUP|default")]
        group: String,
        #[arg(value_name = "LINE[,LINE...]")]
        exits: String,
    },
}

/// `a,b:2, c` -> `["a", "b:2", "c"]`.
fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// Runs a `policy` command.
pub fn run(cli: &Cli, cmd: &PolicyCommand) -> Result<()> {
    let request = match cmd {
        PolicyCommand::List { json } => {
            let Response::Policy(p) = call(cli, Request::Policy(PolicyRequest::List))? else {
                bail!("unexpected answer from the daemon");
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print!("{}", policy_text(&p));
            }
            return Ok(());
        }
        PolicyCommand::Import { group, file } => {
            let cidrs = read_cidrs(file)?;
            // Requests are at most MAX_MESSAGE bytes: a long list goes in parts.
            let per = (MAX_MESSAGE / 64).max(1);
            for part in cidrs.chunks(per) {
                done(call(
                    cli,
                    Request::Policy(PolicyRequest::Add {
                        group: group.clone(),
                        cidrs: part.to_vec(),
                    }),
                )?)?;
            }
            return Ok(());
        }
        PolicyCommand::Create {
            group,
            exit,
            from,
            priority,
        } => PolicyRequest::Create {
            group: group.clone(),
            exits: list(exit),
            from: from.clone(),
            priority: *priority,
        },
        PolicyCommand::Add { group, cidrs } => PolicyRequest::Add {
            group: group.clone(),
            cidrs: cidrs.clone(),
        },
        PolicyCommand::Remove { group, cidrs } => PolicyRequest::Remove {
            group: group.clone(),
            cidrs: cidrs.clone(),
        },
        PolicyCommand::Default { exit } => PolicyRequest::Default { exit: exit.clone() },
        PolicyCommand::UnsetDefault => PolicyRequest::UnsetDefault,
        PolicyCommand::Apply { group } => PolicyRequest::Apply {
            group: group.clone(),
        },
        PolicyCommand::Revoke { group } => PolicyRequest::Revoke {
            group: group.clone(),
        },
        PolicyCommand::SetPriority { group, priority } => PolicyRequest::SetPriority {
            group: group.clone(),
            priority: *priority,
        },
        PolicyCommand::Delete { group } => PolicyRequest::Delete {
            group: group.clone(),
        },
        PolicyCommand::Failover { group, exits } => PolicyRequest::Failover {
            group: group.clone(),
            exits: list(exits),
        },
    };
    done(call(cli, Request::Policy(request))?)
}

/// Prints what a change did.
fn done(response: Response) -> Result<()> {
    match response {
        Response::Done { messages } => {
            for m in messages {
                println!("✓ {m}");
            }
            Ok(())
        }
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// The CIDRs of an import file: one a line, blank lines and `#` comments skipped.
fn read_cidrs(file: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        entry
            .parse::<Cidr>()
            .map_err(|e| anyhow!("{}:{}: {e}; nothing imported", file.display(), n + 1))?;
        out.push(entry.to_string());
    }
    if out.is_empty() {
        bail!("{} lists no CIDR; nothing imported", file.display());
    }
    Ok(out)
}

/// `line check [line] [ip,...]`.
pub fn check(cli: &Cli, line: &Option<String>, targets: &Option<String>, json: bool) -> Result<()> {
    let targets: Vec<IpAddr> = targets
        .as_deref()
        .map(list)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|_| anyhow!("{t:?} is not an IP address (targets: ip[,ip...])"))
        })
        .collect::<Result<_>>()?;
    let Response::Checked { results } = call(
        cli,
        Request::CheckLines {
            line: line.clone(),
            targets,
        },
    )?
    else {
        bail!("unexpected answer from the daemon");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", check_text(&results));
    }
    Ok(())
}

/// `line set-cost <line> <cost>`.
pub fn set_cost(cli: &Cli, line: &str, cost: u32) -> Result<()> {
    done(call(
        cli,
        Request::SetCost {
            line: line.to_string(),
            cost,
        },
    )?)
}

/// `twnode status [--json]`.
pub fn status(cli: &Cli, json: bool) -> Result<()> {
    let Response::NodeStatus(s) = call(cli, Request::NodeStatus)? else {
        bail!("unexpected answer from the daemon");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", status_text(&s));
    }
    Ok(())
}

fn health_text(h: &HealthStatus) -> String {
    if h.samples == 0 {
        return format!("to {}: no probe answered or lost yet", h.target);
    }
    let score = h.score.map_or("-".to_string(), |s| format!("{s}"));
    let rtt = h
        .latency_ms
        .map_or("-".to_string(), |l| format!("{l:.1} ms"));
    let mut s = format!(
        "score {score:<5} loss {:.0}%  rtt {rtt}  (to {}, {} probes",
        h.loss_percent, h.target, h.samples
    );
    if h.cost > 0 {
        let _ = write!(s, ", cost {}", h.cost);
    }
    s.push(')');
    if h.dead {
        let _ = write!(s, "  DEAD: last {} lost", h.lost_in_a_row);
    }
    s
}

fn check_text(results: &[CheckResult]) -> String {
    let mut out = String::new();
    let width = results
        .iter()
        .map(|r| r.line.len())
        .max()
        .unwrap_or(4)
        .max(4);
    for r in results {
        for h in &r.targets {
            let _ = writeln!(out, "{:<width$}  {}", r.line, health_text(h));
        }
        if let Some(n) = &r.note {
            let _ = writeln!(out, "{:<width$}  {n}", r.line);
        }
    }
    if results.is_empty() {
        out.push_str("(no lines)\n");
    }
    out
}

fn group_text(out: &mut String, g: &GroupStatus) {
    let state = match (g.applied, g.installed) {
        (true, true) => "applied",
        (true, false) => "applied, NOT installed",
        (false, _) => "revoked",
    };
    let _ = writeln!(
        out,
        "{}  priority {}, from {}, {}, {state}",
        g.name, g.priority, g.from, g.mode
    );
    if let Some(n) = &g.note {
        let _ = writeln!(out, "  ! {n}");
    }
    let width = g.exits.iter().map(|e| e.line.len()).max().unwrap_or(0) + 4;
    for e in &g.exits {
        let mark = if e.active { "*" } else { " " };
        let name = if g.mode == "balance" {
            format!("{}:{}", e.line, e.weight)
        } else {
            e.line.clone()
        };
        let health = e
            .health
            .as_ref()
            .map_or("not probed".to_string(), health_text);
        let _ = writeln!(out, "  {mark} {name:<width$} {health}");
    }
    let shown: Vec<&str> = g.cidrs.iter().take(8).map(String::as_str).collect();
    let more = g.cidrs.len().saturating_sub(shown.len());
    let _ = writeln!(
        out,
        "    destinations: {}{}",
        if shown.is_empty() {
            "(none yet)".to_string()
        } else {
            shown.join(", ")
        },
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
}

fn ago(unix_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ms = now.saturating_sub(unix_ms);
    if ms < 60_000 {
        format!("{:.1} s ago", ms as f64 / 1000.0)
    } else {
        output::age(Some(ms / 1000))
    }
}

fn events_text(out: &mut String, events: &[FailoverEvent], last: usize) {
    let skip = events.len().saturating_sub(last);
    for e in events.iter().skip(skip) {
        let from = if e.from.is_empty() {
            "-".to_string()
        } else {
            e.from.join(",")
        };
        let to = if e.to.is_empty() {
            "(unreachable)".to_string()
        } else {
            e.to.join(",")
        };
        let _ = writeln!(
            out,
            "  {:>12}  {}: {from} -> {to}: {}",
            ago(e.unix_ms),
            e.group,
            e.reason
        );
    }
}

/// `policy list`'s text.
pub fn policy_text(p: &PolicyStatus) -> String {
    let mut out = String::new();
    for g in &p.groups {
        group_text(&mut out, g);
    }
    if p.groups.is_empty() {
        out.push_str("(no policy groups: `twnode policy create <group> <exit>`)\n");
    }
    match &p.default_exit {
        Some(d) => group_text(&mut out, d),
        None => out.push_str("default exit: none (`twnode policy default <line>`)\n"),
    }
    out
}

/// `twnode status`'s text: the lines' tree with health, the groups, the latest events.
pub fn status_text(s: &NodeStatus) -> String {
    let mut out = String::from("LINES\n");
    let statuses: Vec<_> = s.lines.iter().map(|l| l.line.clone()).collect();
    let width = s
        .lines
        .iter()
        .map(|l| l.line.name.len() + 2 * l.line.depth)
        .max()
        .unwrap_or(0)
        + 2;
    for l in output::tree_order(&statuses) {
        let Some(h) = s.lines.iter().find(|x| x.line.name == l.name) else {
            continue;
        };
        let name = format!("{}{}", "  ".repeat(l.depth), l.name);
        let state = l.state.to_string();
        match h.health.as_slice() {
            [] => {
                let cost = if h.cost > 0 {
                    format!("cost {}, ", h.cost)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  {name:<width$} {state:<12} {cost}not probed (no group uses it)"
                );
            }
            many => {
                for (i, p) in many.iter().enumerate() {
                    let (n, st) = if i == 0 {
                        (name.as_str(), state.as_str())
                    } else {
                        ("", "")
                    };
                    let _ = writeln!(out, "  {n:<width$} {st:<12} {}", health_text(p));
                }
            }
        }
    }
    if s.lines.is_empty() {
        out.push_str("  (no lines)\n");
    }
    out.push_str("\nPOLICY\n");
    for line in policy_text(&s.policy).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.push_str("\nRECENT EXIT CHANGES\n");
    if s.policy.events.is_empty() {
        out.push_str("  (none)\n");
    }
    events_text(&mut out, &s.policy.events, 10);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ExitStatus;

    #[test]
    fn exit_lists_split_on_commas() {
        assert_eq!(list("b1:2, b2,,b3"), ["b1:2", "b2", "b3"]);
    }

    #[test]
    fn import_file_skips_comments_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "# asia\n192.0.2.0/24\n\n198.18.0.0/15  # lab\n").unwrap();
        assert_eq!(
            read_cidrs(&path).unwrap(),
            ["192.0.2.0/24", "198.18.0.0/15"]
        );
        std::fs::write(&path, "192.0.2.0/24\n10.0.0.1/8\n").unwrap();
        let e = read_cidrs(&path).unwrap_err().to_string();
        assert!(
            e.contains("list.txt:2: ") && e.contains("10.0.0.0/8"),
            "{e}"
        );
    }

    #[test]
    fn the_active_exit_is_marked() {
        let g = GroupStatus {
            name: "asia".into(),
            mode: "failover".into(),
            priority: 100,
            from: "all".into(),
            cidrs: vec!["192.0.2.0/24".into()],
            exits: vec![
                ExitStatus {
                    line: "b1".into(),
                    weight: 1,
                    active: false,
                    health: None,
                },
                ExitStatus {
                    line: "b2".into(),
                    weight: 1,
                    active: true,
                    health: None,
                },
            ],
            applied: true,
            installed: true,
            note: None,
        };
        let mut out = String::new();
        group_text(&mut out, &g);
        assert!(out.contains("  * b2 "), "{out}");
        assert!(out.contains("    b1 "), "{out}");
    }
}

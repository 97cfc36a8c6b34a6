//! The control messages of policy routing and health: `policy ...` requests, `line
//! check`, `line set-cost`, and the views `policy list`, `line check` and `twnode
//! status` print.
//!
//! Rules: requests carry what the user typed (exit specs, CIDRs as text); the daemon
//! validates them with the config's own rules, so a command and a hand-edited file are
//! refused alike.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::LineStatus;

/// A `twnode policy ...` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyRequest {
    /// `policy create <group> <exit[,exit...]> [--from ...] [--priority N]`.
    Create {
        group: String,
        /// `line` or `line:weight`, preferred first.
        exits: Vec<String>,
        from: Option<String>,
        /// `None`: the highest priority in use + 1 (100 for the first group).
        priority: Option<u32>,
    },
    /// `policy add <group> <cidr>...` and `policy import` (the file read by the
    /// command).
    Add { group: String, cidrs: Vec<String> },
    /// `policy remove <group> <cidr>...`.
    Remove { group: String, cidrs: Vec<String> },
    /// `policy list`.
    List,
    /// `policy default <exit>`.
    Default { exit: String },
    /// `policy unset-default`.
    UnsetDefault,
    /// `policy apply [group]` (`None`: every group and the default exit).
    Apply { group: Option<String> },
    /// `policy revoke [group]`.
    Revoke { group: Option<String> },
    /// `policy set-priority <group> <N>`.
    SetPriority { group: String, priority: u32 },
    /// `policy delete <group>`.
    Delete { group: String },
    /// `policy failover <group|default> <line1,line2,...>`.
    Failover { group: String, exits: Vec<String> },
}

/// One exit of a group as `policy list` and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub line: String,
    /// Balancing weight (1 for failover exits).
    pub weight: u32,
    /// Carries the group's traffic now.
    pub active: bool,
    /// The line's health as its probes see it (best of its targets).
    pub health: Option<HealthStatus>,
}

/// A probed path's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// Where the probes go.
    pub target: IpAddr,
    /// Probes the figures cover.
    pub samples: u32,
    pub loss_percent: f64,
    pub latency_ms: Option<f64>,
    /// TrueWord Node's score with the line's cost (0-100), once known.
    pub score: Option<f64>,
    /// The latest probes lost in a row made it dead.
    pub dead: bool,
    pub lost_in_a_row: u32,
    /// The line's cost (`line set-cost`).
    pub cost: u8,
}

/// A group (or the default exit) as `policy list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's name; `default` for the default exit.
    pub name: String,
    /// `failover` or `balance`.
    pub mode: String,
    pub priority: u32,
    pub from: String,
    pub cidrs: Vec<String>,
    pub exits: Vec<ExitStatus>,
    /// In the config as applied (`policy apply`) or revoked.
    pub applied: bool,
    /// Its rule and routes are on the host now.
    pub installed: bool,
    /// Why not, or a warning (no exit running: destinations unreachable).
    pub note: Option<String>,
}

/// A change of a group's exits, kept for `status` (the latest ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverEvent {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub group: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// Why, in words.
    pub reason: String,
}

/// `policy list`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub groups: Vec<GroupStatus>,
    pub default_exit: Option<GroupStatus>,
    /// The latest failover events, oldest first.
    pub events: Vec<FailoverEvent>,
}

/// One line's result of `line check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub line: String,
    /// The figures per target (empty when the line is not running).
    pub targets: Vec<HealthStatus>,
    /// Why the line could not be checked.
    pub note: Option<String>,
}

/// `twnode status`'s answer: the lines (parents first) with their health, and the
/// policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub lines: Vec<LineHealth>,
    pub policy: PolicyStatus,
}

/// A line in `twnode status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineHealth {
    pub line: LineStatus,
    /// Its probes, when a group or the default exit uses it (one per target).
    pub health: Vec<HealthStatus>,
    /// Its cost.
    pub cost: u8,
}

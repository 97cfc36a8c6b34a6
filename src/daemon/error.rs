//! Why a control request was refused: [`RequestError`], whose text is what `twnode`
//! prints to the person who asked.
//!
//! Rules: each message names the line (or file) and says what to do; a refused request
//! changed nothing.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::{ConfigError, LineName};
use crate::dataplane::DataplaneError;

/// A control request the daemon refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request names a line the configuration does not have.
    #[error("no line named {name:?}; `twnode line list` shows the configured lines")]
    NoSuchLine {
        /// The name as given.
        name: String,
    },

    /// `reload`: the config file does not load; the running configuration stays.
    #[error("reload refused, keeping the running configuration: {0}")]
    ReloadRefused(#[source] ConfigError),

    /// The config file was edited since the daemon loaded it; writing it would lose the
    /// edits.
    #[error(
        "{} was edited since the daemon loaded it; run `twnode reload` (or \
         `systemctl reload twnode`) first so the edits are not overwritten",
        path.display()
    )]
    FileEdited {
        /// The config file.
        path: PathBuf,
    },

    /// The config file on disk does not load, so it cannot be updated.
    #[error(
        "{0}; the file on disk does not load, so it cannot be updated: fix it and \
         run `twnode reload` first"
    )]
    FileBroken(#[source] ConfigError),

    /// `line create`: the new line does not fit the configuration.
    #[error(transparent)]
    Config(ConfigError),

    /// `line create`: the new line's parent line is not running, so it cannot come up.
    #[error("parent line {parent} is not running ({why}); bring it up first")]
    ParentNotRunning {
        /// The parent line.
        parent: LineName,
        /// Why the parent is down, as its status says.
        why: String,
    },

    /// `line create`: the new line could not be brought up; nothing of it was left on
    /// the host and the config file is unchanged.
    #[error("{reason}")]
    NotUp {
        /// Why, as the line's status would say.
        reason: String,
    },

    /// `line create`: the config file could not be written, so the line that came up
    /// was taken down again.
    #[error("line not created: {0}")]
    NotCreated(#[source] ConfigError),

    /// `line delete` of a line that carries others, without `--cascade`.
    #[error(
        "line {name} carries {}; delete those first or add --cascade",
        below.join(", ")
    )]
    CarriesLines {
        /// The line asked for.
        name: String,
        /// The lines it carries, directly or not.
        below: Vec<String>,
    },

    /// `line delete`: the config file could not be written, so nothing was deleted.
    #[error("nothing deleted: {0}")]
    NothingDeleted(#[source] ConfigError),

    /// `line show-peer` of a WireGuard client: the peer command comes from the server.
    #[error(
        "line {name} is a client; its peer command comes from the server: run \
         `twnode line show-peer {name}` on {server}"
    )]
    Client {
        /// The line.
        name: LineName,
        /// The server's underlay address.
        server: IpAddr,
    },

    /// `line show-peer` of a server line whose keys were given by hand: twnode does not
    /// know the client's private key.
    #[error(
        "line {name} was created with keys given by hand, so twnode does not know the \
         client's private key; give the client its key yourself"
    )]
    KeysByHand {
        /// The line.
        name: LineName,
    },

    /// The answer needs the line's underlay address, which is known once it runs.
    #[error("line {name} is not running, so its local IP is not known yet: {why}")]
    NotRunning {
        /// The line.
        name: LineName,
        /// Why it is not running, as its status says.
        why: String,
    },

    /// `line show --xfrm` of a line without ESP.
    #[error("line {name} is not encrypted; --xfrm applies to lines created with --encrypt")]
    NotEncrypted {
        /// The line.
        name: String,
    },

    /// `line show --xfrm` of a line with epoch keying, whose SAs a kernel cannot follow.
    #[error(
        "line {name} uses epoch keying (keys agreed with a twnode peer at every start), \
         which a kernel peer cannot follow; for a kernel peer create the line with \
         --esp-keying static"
    )]
    XfrmNeedsStatic {
        /// The line.
        name: String,
    },

    /// `line show --xfrm`: the line's keys give no SAs between its addresses.
    #[error("line {name}: {source}")]
    Xfrm {
        /// The line.
        name: String,
        /// Why the SAs could not be derived.
        #[source]
        source: DataplaneError,
    },

    /// A `policy` command names a group the configuration does not have.
    #[error("no policy group named {name:?}; `twnode policy list` shows the groups")]
    NoSuchGroup {
        /// The name as given.
        name: String,
    },

    /// `policy create` of a group that exists.
    #[error(
        "a policy group named {name} already exists; choose another name, or change it with \
         `twnode policy failover {name} ...` / `policy add {name} ...`"
    )]
    GroupExists {
        /// The group.
        name: String,
    },

    /// `policy create` without `--priority` when the highest priority in use is 899.
    #[error(
        "no priority above the highest in use is free (899 is the last); give one with --priority"
    )]
    NoFreePriority,

    /// `policy unset-default`, `apply default`... without a default exit.
    #[error("no default exit is set; `twnode policy default <line>` sets one")]
    NoDefaultExit,

    /// `policy remove` with something that is not a CIDR.
    #[error("policy group {group}: {message}")]
    BadCidr {
        /// The group.
        group: String,
        /// What is wrong with the CIDR.
        message: String,
    },

    /// `policy remove` of a destination the group does not have.
    #[error("policy group {group} has no destination {cidr}; `twnode policy list` shows them")]
    NotInGroup {
        /// The group.
        group: String,
        /// The destination.
        cidr: String,
    },

    /// `line delete` of a line that policy groups use as an exit, without `--force`.
    #[error(
        "policy groups use {} as an exit; change their exits first (`twnode policy failover \
         <group> ...`), or add --force to move them to their other exits",
        lines.join(", ")
    )]
    UsedByPolicy {
        /// `line (group g)` for each use.
        lines: Vec<String>,
    },

    /// `line delete --force` of a group's only exit.
    #[error(
        "policy group {group} has no other exit; delete it first (`twnode policy delete \
         {group}`, or `policy unset-default` for the default exit)"
    )]
    NoOtherExit {
        /// The group (`default` for the default exit).
        group: String,
    },

    /// A policy or cost change could not be written to the config file.
    #[error("nothing changed: {0}")]
    NothingChanged(#[source] ConfigError),
}

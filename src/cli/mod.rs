//! The `twnode` command line: TrueWord Node's grammar (`twnode line create <parent>
//! <peer_ip> <peer_vip> <local_vip> <name> --type ... --mode ...`, `twnode policy ...`)
//! plus the daemon.
//!
//! Rules: a thin client of [`crate::control`]; it never touches netlink, TUN devices or
//! sockets other than the control socket (`init` only writes two sysctls and creates a
//! directory). Errors are one line that names the problem and what to do; exit code 1.

mod docs;
mod output;
mod policy;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, PrivateKey};
use crate::control::{self, client, IpTunnelArgs, LineSpec, Request, Response};

/// What `twnode --help` says beyond the one-line description: what needs the daemon,
/// and where the lines are kept.
const LONG_ABOUT: &str = "\
twnode: userspace point-to-point tunnels (\"lines\": WireGuard, IPIP, GRE, SIT, IPv6 \
tunnels, GRE over ESP) on TUN devices, stackable into multi-hop relays.

The `line` commands and `reload` talk to a running daemon over its control socket \
(--control, default /run/twnode/control.sock): start it first, as root, with \
`systemctl start twnode` or `twnode daemon`. `daemon`, `init`, `genkey`, `pubkey`, `completions` and `man` \
need no daemon.

The daemon keeps the lines in its configuration file (--config, default \
/etc/twnode/twnode.toml): TOML, one [[line]] table per line (name, parent, peer_ip, \
peer_vip, local_vip, type, and a [line.wireguard] or [line.ip_tunnel] table). \
`line create` and `line delete` write it; you may edit it by hand and run `twnode \
reload`. Every key: the README's \"Configuration file\" section and \
packaging/twnode.toml.example.";

/// twnode: userspace point-to-point tunnels (WireGuard, IP tunnels) on TUN devices,
/// stackable into multi-hop relays. Run `twnode daemon` (or the systemd unit), then
/// create lines.
#[derive(Debug, Parser)]
#[command(name = "twnode", version, about, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Configuration file [default: /etc/twnode/twnode.toml]
    #[arg(long, global = true, env = "TWNODE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Control socket of the daemon
    #[arg(
        long,
        global = true,
        env = "TWNODE_CONTROL",
        value_name = "PATH",
        default_value = control::DEFAULT_SOCKET
    )]
    control: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd runs it as `twnode daemon`)
    Daemon {
        /// Directory for durable state (ESP sequence-number marks of static-keyed
        /// lines), locked by the daemon: one daemon per directory
        #[arg(
            long,
            env = "TWNODE_STATE_DIR",
            value_name = "DIR",
            default_value = crate::daemon::DEFAULT_STATE_DIR
        )]
        state_dir: PathBuf,
        /// Directory of the WireGuard lines' UAPI sockets, where `wg show` and `wg set`
        /// find them
        #[arg(
            long,
            env = "TWNODE_UAPI_DIR",
            value_name = "DIR",
            default_value = crate::control::uapi_server::DEFAULT_UAPI_DIR
        )]
        uapi_dir: PathBuf,
        /// Let this static-keyed ESP line start once without its sequence-number mark,
        /// from sequence number 1: only if no packet was ever sent under its keys from
        /// this host, or nonces repeat (repeatable)
        #[arg(long, value_name = "LINE")]
        esp_fresh_state: Vec<String>,
    },
    /// Prepare this host: enable IPv4/IPv6 forwarding, create the config directory (0700)
    Init,
    /// Print a new private key (base64, as `wg genkey`)
    Genkey,
    /// Read a private key on stdin, print its public key (as `wg pubkey`)
    Pubkey,
    /// Manage lines (tunnels)
    #[command(subcommand)]
    Line(Box<LineCommand>),
    /// Ask the daemon to re-read its configuration file (as SIGHUP does)
    Reload,
    /// Policy routing: which destinations leave through which lines, with failover
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The lines with their health and score, the groups with their active exit, the
    /// default exit, and the latest exit changes
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for bash, zsh or fish
    Completions {
        /// The shell: bash, zsh or fish
        shell: docs::Shell,
    },
    /// Write man pages for twnode and every subcommand into DIR
    Man {
        /// Directory for the pages (twnode.1, twnode-line-create.1, ...)
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum LineCommand {
    /// Create a line, store it in the config and bring it up
    Create(Box<CreateArgs>),
    /// List lines: parents first, children indented under them
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Show one line in detail (state, endpoint, keys' public halves, counters)
    Show {
        /// The line's name, as `twnode line list` shows it
        name: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Encrypted lines: print the `ip xfrm` state and policy commands a Linux kernel
        /// peer would run (they carry the keys)
        #[arg(long, conflicts_with = "json")]
        xfrm: bool,
    },
    /// Print the command that creates this line's other end (server lines)
    ShowPeer {
        /// The line's name, as `twnode line list` shows it
        name: String,
    },
    /// Take a line down and remove it from the config
    Delete {
        /// The line's name, as `twnode line list` shows it
        name: String,
        /// Also delete the lines stacked on this one
        #[arg(long)]
        cascade: bool,
        /// Also when policy groups use it: they move to their other exits
        #[arg(long)]
        force: bool,
    },
    /// Probe lines now and print loss, latency and score per line
    Check {
        /// One line [default: every line]
        line: Option<String>,
        /// Where to send the probes [default: each line's peer VIP]
        #[arg(value_name = "IP[,IP...]")]
        targets: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Set a line's cost, 0-100: half a point off its health score each
    SetCost { line: String, cost: u32 },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Physical interface (e.g. eth0) or existing line the new line runs over
    parent: String,
    /// The peer's underlay address, reached through <parent>
    peer_ip: String,
    /// The peer's virtual IP on this line
    peer_vip: String,
    /// This end's virtual IP on this line
    local_vip: String,
    /// Line name (also the TUN device's name, at most 15 characters)
    name: String,
    /// Tunnel type: wireguard, or an IP tunnel as iproute2's modes: ipip, gre, sit,
    /// ip6ip6, ipip6, gre6; ipsec is gre with --encrypt
    /// [default: wireguard; ipsec when --encrypt or ESP keys are given]
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// server (listens, generates both key pairs) or client (dials the server)
    #[arg(long)]
    mode: Option<String>,
    /// UDP port to listen on (server: required; client: optional)
    #[arg(long, value_name = "PORT")]
    listen_port: Option<u32>,
    /// The server's UDP port (client)
    #[arg(long, value_name = "PORT")]
    peer_port: Option<u32>,
    /// This end's private key, base64 (client; printed by the server's peer command)
    #[arg(long, value_name = "KEY")]
    private_key: Option<String>,
    /// The peer's public key, base64
    #[arg(long, value_name = "KEY")]
    peer_pubkey: Option<String>,
    /// WireGuard's optional preshared key (post-quantum layer), the same on both ends:
    /// a file holding it in base64 (`wg genpsk > psk`), `-` to read it from stdin, or
    /// `generate` for a new one (a server; its peer command carries it). Never the key
    /// itself: keys do not belong on the command line
    #[arg(long, value_name = "FILE|-|generate")]
    preshared_key: Option<String>,
    /// WireGuard: persistent keepalive in seconds (0 = off) [default: 25]. IP tunnels:
    /// a probe every SECS, the line down after RETRIES unanswered [default: off; RETRIES 3]
    #[arg(long, value_name = "SECS[,RETRIES]")]
    keepalive: Option<String>,
    /// MTU of the line [default: the parent's MTU minus the tunnel's overhead]
    #[arg(long)]
    mtu: Option<u32>,
    /// GRE key for both directions: a number or a dotted quad (gre, gre6)
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// GRE key expected on received packets
    #[arg(long, value_name = "KEY")]
    ikey: Option<String>,
    /// GRE key put on sent packets
    #[arg(long, value_name = "KEY")]
    okey: Option<String>,
    /// GRE sequence numbers both ways (--iseq and --oseq)
    #[arg(long)]
    seq: bool,
    /// Require increasing GRE sequence numbers on received packets
    #[arg(long)]
    iseq: bool,
    /// Number sent GRE packets
    #[arg(long)]
    oseq: bool,
    /// GRE checksums both ways (--icsum and --ocsum)
    #[arg(long)]
    csum: bool,
    /// Require a GRE checksum on received packets
    #[arg(long)]
    icsum: bool,
    /// Checksum sent GRE packets
    #[arg(long)]
    ocsum: bool,
    /// Outer TTL (IPv6: hop limit), 1-255 or inherit [default: inherit over IPv4, 64 over IPv6]
    #[arg(long, value_name = "TTL")]
    ttl: Option<String>,
    /// Outer TOS (IPv6: traffic class), hexadecimal as iproute2 (10 = 0x10) or inherit [default: 0]
    #[arg(long, value_name = "TOS")]
    tos: Option<String>,
    /// Set DF on every outer IPv4 packet (the default)
    #[arg(long, conflicts_with = "nopmtudisc")]
    pmtudisc: bool,
    /// Copy DF from the inner packet instead (needs --ttl inherit, as iproute2)
    #[arg(long)]
    nopmtudisc: bool,
    /// Protect the GRE line with ESP (RFC 4303, transport mode); needs --enc-key and --auth-key
    #[arg(long)]
    encrypt: bool,
    /// ESP cipher: chacha20-poly1305 or aes-256-gcm [default: chacha20-poly1305]
    #[arg(long, value_name = "CIPHER")]
    cipher: Option<String>,
    /// ESP key, 0x + 32-128 hex digits, the same on both ends (secret)
    #[arg(long, value_name = "0xHEX")]
    enc_key: Option<String>,
    /// Second ESP key, 0x + 32-128 hex digits, the same on both ends (secret)
    #[arg(long, value_name = "0xHEX")]
    auth_key: Option<String>,
    /// How ESP gets its SAs: epoch (fresh keys agreed with a twnode peer at every start
    /// and rekey) or static (from the keys alone, for a Linux kernel peer and `line show
    /// --xfrm`) [default: epoch]
    #[arg(long, value_name = "epoch|static")]
    esp_keying: Option<String>,
    /// Epoch keying: seconds between rekeys, 1-86400 [default: 3600]
    #[arg(long, value_name = "SECS")]
    esp_rekey: Option<u32>,
    /// IP tunnels over an Ethernet parent: send through an AF_XDP socket on the next
    /// hop's device, past this host's routing, netfilter, qdisc and packet captures
    /// (faster; see the README's "AF_XDP transmit")
    #[arg(long)]
    af_xdp: bool,
}

/// `--preshared-key FILE|-|generate`: the key's base64 text (checked by the daemon).
fn read_preshared_key(source: &str) -> Result<String> {
    if source == "generate" {
        return Ok(crate::tunnel::keys::PresharedKey::generate().to_base64());
    }
    let mut text = String::new();
    let read = if source == "-" {
        std::io::stdin().take(1024).read_to_string(&mut text)
    } else {
        std::fs::File::open(source).and_then(|f| f.take(1024).read_to_string(&mut text))
    };
    read.with_context(|| {
        format!("--preshared-key {source}: cannot read the key (a file holding it in base64, or - for stdin)")
    })?;
    Ok(text.trim().to_string())
}

/// `--keepalive SECS[,RETRIES]`.
fn parse_keepalive(s: &str) -> Result<(u32, Option<u32>)> {
    let bad = || anyhow!("--keepalive {s:?}: expected SECS or SECS,RETRIES (e.g. 10 or 10,3)");
    let (secs, retries) = match s.split_once(',') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let secs = secs.trim().parse().map_err(|_| bad())?;
    let retries = retries
        .map(|r| r.trim().parse().map_err(|_| bad()))
        .transpose()?;
    Ok((secs, retries))
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Daemon { .. });
    init_tracing(daemon);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined, the most specific last.
            eprintln!("twnode: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn init_tracing(daemon: bool) {
    // boringtun's own messages are off unless asked for (`TWNODE_LOG=info,boringtun=debug`):
    // it warns on healthy lines (a retried handshake) and names no line outside our
    // spans; the data plane logs what is meaningful (line up and down, what is likely
    // wrong) with the line's name.
    let default = if daemon { "info,boringtun=off" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWNODE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd the journal adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG))
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Daemon {
            state_dir,
            uapi_dir,
            esp_fresh_state,
        } => run_daemon(&cli, state_dir.clone(), uapi_dir.clone(), esp_fresh_state),
        Command::Init => init(&cli),
        Command::Genkey => {
            println!("{}", PrivateKey::generate().to_base64());
            Ok(())
        }
        Command::Pubkey => {
            let mut text = String::new();
            std::io::stdin()
                .take(1024)
                .read_to_string(&mut text)
                .context("cannot read the private key from stdin")?;
            let key: PrivateKey = text
                .trim()
                .parse()
                .map_err(|e| anyhow!("the private key on stdin is {e}"))?;
            println!("{}", key.public_key());
            Ok(())
        }
        Command::Reload => match call(&cli, Request::Reload)? {
            Response::Reloaded {
                stopped,
                started,
                not_up,
            } => {
                println!(
                    "reloaded: {} line(s) stopped, {} started",
                    stopped.len(),
                    started.len()
                );
                if not_up.is_empty() {
                    return Ok(());
                }
                let lines: Vec<String> = not_up
                    .iter()
                    .map(|l| format!("{}: {}", l.name, l.reason))
                    .collect();
                bail!(
                    "reloaded, but {} line(s) did not come up (the daemon keeps trying; \
                     `twnode line show NAME` follows them): {}",
                    not_up.len(),
                    lines.join("; ")
                )
            }
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
        Command::Line(cmd) => line(&cli, cmd),
        Command::Policy(cmd) => policy::run(&cli, cmd),
        Command::Status { json } => policy::status(&cli, *json),
        Command::Completions { shell } => {
            docs::completions(*shell);
            Ok(())
        }
        Command::Man { dir } => {
            let n = docs::man_pages(dir)?;
            println!("{n} man pages written to {}", dir.display());
            Ok(())
        }
    }
}

fn run_daemon(cli: &Cli, state_dir: PathBuf, uapi_dir: PathBuf, fresh: &[String]) -> Result<()> {
    let esp_fresh_state = fresh
        .iter()
        .map(|n| {
            n.parse::<crate::config::LineName>()
                .map_err(|e| anyhow!("--esp-fresh-state {n:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = crate::daemon::Options {
        config: config_path(cli),
        control: cli.control.clone(),
        state_dir,
        uapi_dir,
        esp_fresh_state,
    };
    // Before the runtime starts its threads: capabilities are per thread.
    crate::daemon::privileges::drop_at_start().context("cannot drop privileges")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("twnode-worker")
        .build()
        .context("cannot start the async runtime")?;
    // `main` prints the error as the one `twnode: ` line; logging it as well would say
    // it twice on stderr (and in the journal).
    runtime
        .block_on(crate::daemon::run(opts))
        .map_err(|e| anyhow!(e))
}

fn init(cli: &Cli) -> Result<()> {
    crate::net::sysctl::enable_forwarding().context("cannot enable forwarding (run as root)")?;
    println!("✓ IPv4 and IPv6 forwarding enabled");
    let path = config_path(cli);
    let dir = path.parent().unwrap_or(Path::new("/"));
    if dir.exists() {
        println!("✓ config directory {} exists", dir.display());
    } else {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        println!("✓ config directory {} created (mode 0700)", dir.display());
    }
    Ok(())
}

/// Sends a request; when the user named a config file, first checks that the daemon
/// behind the socket uses that file, so a command never edits another daemon's lines.
fn call(cli: &Cli, request: Request) -> Result<Response> {
    if let Some(want) = &cli.config {
        let status = client::call(&cli.control, &Request::Status)?;
        if let Response::Status(s) = status {
            if !same_file(&s.config, want) {
                bail!(
                    "the daemon on {} uses config {}, not {}; pass --control for the daemon that uses {}",
                    cli.control.display(),
                    s.config.display(),
                    want.display(),
                    want.display()
                );
            }
        }
    }
    Ok(client::call(&cli.control, &request)?)
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| {
            // The file may not exist yet: compare its directory.
            p.parent()
                .and_then(|d| std::fs::canonicalize(d).ok())
                .map(|d| d.join(p.file_name().unwrap_or_default()))
                .unwrap_or_else(|| p.to_path_buf())
        })
    };
    canon(a) == canon(b)
}

fn parse_ip(what: &str, s: &str) -> Result<std::net::IpAddr> {
    s.parse().map_err(|_| {
        anyhow!("<{what}> {s:?} is not an IP address (e.g. 198.51.100.20 or 2001:db8::1)")
    })
}

fn line(cli: &Cli, cmd: &LineCommand) -> Result<()> {
    match cmd {
        LineCommand::Create(a) => {
            let (keepalive, keepalive_retries) = match &a.keepalive {
                Some(k) => {
                    let (secs, retries) = parse_keepalive(k)?;
                    (Some(secs), retries)
                }
                None => (None, None),
            };
            let spec = LineSpec {
                parent: a.parent.clone(),
                peer_ip: parse_ip("peer_ip", &a.peer_ip)?,
                peer_vip: parse_ip("peer_vip", &a.peer_vip)?,
                local_vip: parse_ip("local_vip", &a.local_vip)?,
                name: a.name.clone(),
                kind: a.kind.clone().unwrap_or_else(|| {
                    let esp = a.encrypt || a.enc_key.is_some() || a.auth_key.is_some();
                    // (--esp-keying alone does not: it applies to encrypted lines only.)
                    if esp { "ipsec" } else { "wireguard" }.to_string()
                }),
                mode: a.mode.clone(),
                listen_port: a.listen_port,
                peer_port: a.peer_port,
                private_key: a.private_key.clone(),
                peer_pubkey: a.peer_pubkey.clone(),
                keepalive,
                mtu: a.mtu,
                keepalive_retries,
                ip_tunnel: IpTunnelArgs {
                    key: a.key.clone(),
                    ikey: a.ikey.clone(),
                    okey: a.okey.clone(),
                    seq: a.seq,
                    iseq: a.iseq,
                    oseq: a.oseq,
                    csum: a.csum,
                    icsum: a.icsum,
                    ocsum: a.ocsum,
                    ttl: a.ttl.clone(),
                    tos: a.tos.clone(),
                    pmtudisc: match (a.pmtudisc, a.nopmtudisc) {
                        (_, true) => Some(false),
                        (true, false) => Some(true),
                        (false, false) => None,
                    },
                    encrypt: a.encrypt,
                    cipher: a.cipher.clone(),
                    enc_key: a.enc_key.clone().map(control::Secret),
                    auth_key: a.auth_key.clone().map(control::Secret),
                    esp_keying: a.esp_keying.clone(),
                    esp_rekey: a.esp_rekey,
                    af_xdp: a.af_xdp,
                },
                preshared_key: a
                    .preshared_key
                    .as_deref()
                    .map(read_preshared_key)
                    .transpose()?
                    .map(control::Secret),
            };
            match call(cli, Request::CreateLine(Box::new(spec)))? {
                Response::Created(c) => {
                    output::created(&c);
                    Ok(())
                }
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        LineCommand::List { json } => match call(cli, Request::ListLines)? {
            Response::Lines { lines } => {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&lines)?);
                } else {
                    print!("{}", output::table(&lines));
                }
                Ok(())
            }
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
        LineCommand::Show {
            name, xfrm: true, ..
        } => match call(cli, Request::ShowXfrm { name: name.clone() })? {
            Response::Xfrm { commands } => {
                eprintln!(
                    "# These commands carry the line's ESP keys: pass them over a trusted \
                     channel and do not store them where others can read them."
                );
                for c in commands {
                    println!("{c}");
                }
                Ok(())
            }
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
        LineCommand::Show { name, json, .. } => {
            match call(cli, Request::ShowLine { name: name.clone() })? {
                Response::Line(l) => {
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&l)?);
                    } else {
                        print!("{}", output::detail(&l));
                    }
                    Ok(())
                }
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        LineCommand::ShowPeer { name } => {
            match call(cli, Request::ShowPeer { name: name.clone() })? {
                Response::Peer(p) => {
                    if p.private_key.is_some() {
                        eprintln!(
                            "# This command carries the peer's private key: pass it over a \
                             trusted channel and do not store it where others can read it."
                        );
                    } else if p.secret {
                        eprintln!(
                            "# This command carries the line's ESP keys (secret): pass it over \
                             a trusted channel and do not store it where others can read it."
                        );
                    }
                    eprintln!("# On the peer, {}.", p.parent_hint());
                    println!("{p}");
                    Ok(())
                }
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        LineCommand::Check {
            line,
            targets,
            json,
        } => policy::check(cli, line, targets, *json),
        LineCommand::SetCost { line, cost } => policy::set_cost(cli, line, *cost),
        LineCommand::Delete {
            name,
            cascade,
            force,
        } => match call(
            cli,
            Request::DeleteLine {
                name: name.clone(),
                cascade: *cascade,
                force: *force,
            },
        )? {
            Response::Deleted { names } => {
                for n in names {
                    println!("✓ line {n} deleted");
                }
                Ok(())
            }
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Issue 22, item 8: `--help` says which commands need the daemon and where the
    /// lines are kept, in what format.
    #[test]
    fn help_says_a_daemon_is_needed_and_where_the_toml_config_is() {
        let help = Cli::command().render_long_help().to_string();
        for said in [
            "talk to a running daemon",
            "systemctl start twnode",
            "twnode daemon",
            "/etc/twnode/twnode.toml",
            "TOML, one [[line]] table per line",
            "packaging/twnode.toml.example",
        ] {
            assert!(help.contains(said), "{said:?} not in:\n{help}");
        }
    }

    /// Issue 22, item 8: every line name argument says what it is.
    #[test]
    fn line_name_arguments_are_described() {
        let mut cli = Cli::command();
        let line = cli.find_subcommand_mut("line").expect("line");
        for sub in ["show", "show-peer", "delete"] {
            let cmd = line.find_subcommand_mut(sub).expect(sub);
            let name = cmd
                .get_arguments()
                .find(|a| a.get_id() == "name")
                .expect("a name argument");
            let help = name.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains("line's name"), "{sub}: {help:?}");
        }
    }
}

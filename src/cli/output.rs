//! What the commands print: the seed's `line create` report and `line list` table.

use std::fmt::Write;

use crate::control::{Created, EspInfo, LineState, LineStatus};

/// `line create`'s report, in the order the seed shows it.
pub fn created(c: &Created) {
    let l = &c.line;
    let mode = l.mode.as_deref().unwrap_or("-");
    if l.mode.is_some() {
        println!("[Create {} line - {mode} mode]", type_label(l));
    } else {
        println!("[Create {} line]", type_label(l));
    }
    println!("Parent:     {}", l.parent);
    match l.local_ip {
        Some(ip) => println!("Local IP:   {ip} (from parent {})", l.parent),
        None => println!("Local IP:   (not known yet)"),
    }
    println!("Peer IP:    {}", l.peer_ip);
    println!("Local VIP:  {}", l.local_vip);
    println!("Peer VIP:   {}", l.peer_vip);
    println!();
    if c.generated_keys {
        println!("Generating key pairs...");
        println!("✓ local key pair generated");
        println!("✓ peer key pair generated");
        println!();
    }
    println!("[Bring-up]");
    println!(
        "✓ TUN device {} created (MTU {})",
        l.name,
        l.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
    );
    println!(
        "✓ VIP {} configured; {} routed in table 80",
        l.local_vip, l.peer_vip
    );
    if let Some(port) = l.listen_port {
        match l.local_ip {
            Some(ip) => println!("✓ listening on {}", std::net::SocketAddr::new(ip, port)),
            None => println!("✓ listening on port {port}"),
        }
    }
    if l.mode.is_none() {
        let proto = match l.kind.as_str() {
            "gre" | "gre6" if encrypted(l) => "50, ESP",
            "gre" | "gre6" => "47",
            "ipip" | "ipip6" => "4",
            _ => "41",
        };
        println!(
            "✓ raw IP socket (protocol {proto}) on {}",
            l.local_ip
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "the parent's address".into())
        );
        if !l.options.is_empty() {
            println!("✓ options: {}", l.options.join(" "));
        }
        match &l.keepalive {
            Some(k) => println!(
                "✓ keepalive every {} s toward {} (down after {} unanswered)",
                k.interval_secs, l.peer_ip, k.retries
            ),
            None => println!("✓ no keepalive (the peer's liveness is not watched)"),
        }
    } else if mode == "client" {
        println!("✓ handshake started toward {}", l.peer_ip);
    } else {
        println!("✓ waiting for the client's handshake");
    }
    println!();
    println!("✓ line {} created and started", l.name);
    if let Some(p) = &c.peer {
        println!();
        println!("[Peer command]");
        println!("Run this on the peer; {}.", p.parent_hint());
        if p.private_key.is_some() {
            println!("It carries the peer's private key: send it over a trusted channel.");
        } else if p.secret {
            println!("It carries the line's ESP keys (secret): send it over a trusted channel.");
        }
        println!();
        println!("{p}");
    }
}

/// Whether the line is GRE over ESP: its options say so (`--json` keeps `type` the
/// encapsulation, `gre`, with `--encrypt` in `options`).
fn encrypted(l: &LineStatus) -> bool {
    l.options.iter().any(|o| o == "--encrypt")
}

/// The type in `line show`'s words: `gre+esp` for an encrypted GRE line.
fn type_name(l: &LineStatus) -> String {
    if encrypted(l) {
        format!("{}+esp", l.kind)
    } else {
        l.kind.clone()
    }
}

/// The type in the table's and `line create`'s words: `GRE+ESP` for an encrypted GRE
/// line.
fn type_label(l: &LineStatus) -> String {
    let kind = match l.kind.as_str() {
        "wireguard" => "WireGuard",
        "ipip" => "IPIP",
        "gre" => "GRE",
        "sit" => "SIT",
        "ip6ip6" => "IP6IP6",
        "ipip6" => "IPIP6",
        "gre6" => "GRE6",
        other => other,
    };
    if encrypted(l) {
        format!("{kind}+ESP")
    } else {
        kind.to_string()
    }
}

/// The HANDSHAKE column: WireGuard's last handshake, an IP tunnel's last keepalive
/// reply ("-" without keepalive).
fn liveness_age(l: &LineStatus) -> String {
    if l.kind == "wireguard" {
        return age(l.last_handshake_secs);
    }
    match &l.keepalive {
        None => "-".into(),
        Some(k) => age(k.last_reply_ms.map(|ms| ms / 1000)),
    }
}

/// A byte count in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How long ago, for the handshake column.
pub fn age(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s < 60 => format!("{s}s ago"),
        Some(s) if s < 3600 => format!("{}m{}s ago", s / 60, s % 60),
        Some(s) => format!("{}h{}m ago", s / 3600, (s % 3600) / 60),
    }
}

fn state_label(l: &LineStatus) -> String {
    match l.state {
        LineState::Up => "✓ up".into(),
        other => format!("✗ {other}"),
    }
}

/// The lines in the order of their tree: each line followed by the lines stacked on it
/// (depth first), siblings in the order given. A line whose parent is not in the list
/// (an interface) is a root.
pub fn tree_order(lines: &[LineStatus]) -> Vec<&LineStatus> {
    let is_line = |name: &str| lines.iter().any(|l| l.name == name);
    let mut out: Vec<&LineStatus> = Vec::with_capacity(lines.len());
    let mut stack: Vec<&LineStatus> = lines.iter().filter(|l| !is_line(&l.parent)).rev().collect();
    while let Some(l) = stack.pop() {
        if out.iter().any(|o| o.name == l.name) {
            continue;
        }
        out.push(l);
        stack.extend(lines.iter().filter(|c| c.parent == l.name).rev());
    }
    // A cycle cannot come from the daemon (the config refuses it); never hide a line.
    for l in lines {
        if !out.iter().any(|o| o.name == l.name) {
            out.push(l);
        }
    }
    out
}

/// `line list`'s table: each line followed by the lines stacked on it, indented.
pub fn table(lines: &[LineStatus]) -> String {
    let header = [
        "NAME",
        "PARENT",
        "TYPE",
        "PEER IP",
        "LOCAL VIP",
        "MTU",
        "STATUS",
        "HANDSHAKE",
        "RX",
        "TX",
    ];
    let rows: Vec<[String; 10]> = tree_order(lines)
        .into_iter()
        .map(|l| {
            let name = if l.depth == 0 {
                l.name.clone()
            } else {
                format!("{}└ {}", "  ".repeat(l.depth - 1), l.name)
            };
            [
                name,
                l.parent.clone(),
                type_label(l),
                l.peer_ip.to_string(),
                l.local_vip.to_string(),
                l.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                state_label(l),
                liveness_age(l),
                bytes(l.rx_bytes),
                bytes(l.tx_bytes),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&mut out, &header.map(String::from));
    if rows.is_empty() {
        out.push_str("(no lines: create one with `twnode line create`)\n");
    }
    for r in &rows {
        line(&mut out, r);
    }
    out
}

/// `line show`'s detail view. Public keys only: private keys never print here.
pub fn detail(l: &LineStatus) -> String {
    let mut out = String::new();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "line:            {}", l.name);
    let _ = writeln!(out, "type:            {}", type_name(l));
    let _ = writeln!(out, "mode:            {}", opt(l.mode.clone()));
    let _ = writeln!(out, "parent:          {} (depth {})", l.parent, l.depth);
    let _ = writeln!(out, "state:           {}", state_label(l));
    if let Some(r) = &l.reason {
        let _ = writeln!(out, "reason:          {r}");
    }
    let _ = writeln!(
        out,
        "local ip:        {}",
        opt(l.local_ip.map(|i| i.to_string()))
    );
    let _ = writeln!(
        out,
        "listen port:     {}",
        opt(l.listen_port.map(|p| p.to_string()))
    );
    let _ = writeln!(out, "peer ip:         {}", l.peer_ip);
    let _ = writeln!(out, "endpoint:        {}", opt(l.endpoint.clone()));
    let _ = writeln!(out, "local vip:       {}", l.local_vip);
    let _ = writeln!(out, "peer vip:        {}", l.peer_vip);
    let _ = writeln!(
        out,
        "mtu:             {}",
        opt(l.mtu.map(|m| m.to_string()))
    );
    if l.kind == "wireguard" {
        let _ = writeln!(out, "public key:      {}", opt(l.public_key.clone()));
        let _ = writeln!(out, "peer public key: {}", opt(l.peer_public_key.clone()));
        let _ = writeln!(out, "last handshake:  {}", age(l.last_handshake_secs));
    } else {
        let options = if l.options.is_empty() {
            "(defaults)".to_string()
        } else {
            l.options.join(" ")
        };
        let _ = writeln!(out, "options:         {options}");
        if let Some(e) = &l.esp {
            let _ = writeln!(out, "esp:             {}", esp_line(e));
            let _ = writeln!(out, "keying:          {}", keying_line(e));
        }
        if let Some(t) = &l.transmit {
            let _ = writeln!(out, "transmit:        {t}");
            if let Some(n) = l.af_xdp_packets {
                let _ = writeln!(
                    out,
                    "                 {n} of {} packets sent went through AF_XDP",
                    l.tx_packets
                );
            }
        }
        match &l.keepalive {
            None => {
                let _ = writeln!(out, "keepalive:       off");
            }
            Some(k) => {
                let _ = writeln!(
                    out,
                    "keepalive:       every {} s, down after {} unanswered; {} sent, {} \
                     replies, {} unanswered, last reply {}",
                    k.interval_secs,
                    k.retries,
                    k.sent,
                    k.replies,
                    k.unanswered,
                    age(k.last_reply_ms.map(|ms| ms / 1000))
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "transfer:        {} received ({} packets), {} sent ({} packets)",
        bytes(l.rx_bytes),
        l.rx_packets,
        bytes(l.tx_bytes),
        l.tx_packets
    );
    if l.drops.is_empty() {
        let _ = writeln!(out, "drops:           none");
    } else {
        let _ = writeln!(out, "drops:");
        for (reason, n) in &l.drops {
            let _ = writeln!(out, "  {reason:<16} {n}");
        }
    }
    out
}

/// The ESP layer's SAs and sequence numbers (`esp:`).
fn esp_line(e: &EspInfo) -> String {
    let (Some(out), Some(inb)) = (e.spi_out, e.spi_in) else {
        return format!("{}, no SAs yet", e.cipher);
    };
    let reserved = e
        .reserved_to
        .map(|r| format!("reserved to {r}, "))
        .unwrap_or_default();
    format!(
        "{}, SPI out {out:#010x} in {inb:#010x}; next sequence {}, {reserved}highest \
         received {}",
        e.cipher, e.next_seq, e.highest_received
    )
}

/// How the SAs came to be (`keying:`): the epoch and the next rekey, or static keys.
fn keying_line(e: &EspInfo) -> String {
    let Some(p) = &e.epoch else {
        return format!(
            "{} (SAs from the keys alone; sequence numbers kept in the state directory)",
            e.keying
        );
    };
    if p.epochs == 0 {
        return format!(
            "epoch: waiting for the peer's Hello ({} sent, {} received); nothing is sent \
             until the peer answers",
            p.hellos_sent, p.hellos_received
        );
    }
    let mut text = format!(
        "epoch {}, agreed {}; next rekey in {} or after {} packets (every {} s)",
        p.epochs,
        age(p.last_rekey_secs),
        p.secs_to_rekey
            .map_or_else(|| "-".to_string(), |s| format!("{s} s")),
        p.packets_to_rekey.unwrap_or(0),
        p.rekey_interval_secs
    );
    if p.rekeying {
        text.push_str("; a rekey is under way");
    }
    text
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10 * 1024 * 1024), "10.0 MiB");
    }

    fn status(name: &str, parent: &str, depth: usize) -> LineStatus {
        LineStatus {
            parent: parent.into(),
            depth,
            ..gre_status(name, &[])
        }
    }

    #[test]
    fn children_are_drawn_under_their_own_parent() {
        // The daemon lists parents first by depth: wg1, gre1, kid1 (on gre1), kid2 (on wg1).
        let lines = [
            status("wg1", "eth0", 0),
            status("gre1", "eth0", 0),
            status("kid1", "gre1", 1),
            status("kid2", "wg1", 1),
            status("deep", "kid2", 2),
        ];
        let names: Vec<String> = table(&lines)
            .lines()
            .skip(1)
            .map(|r| r.split("  ").find(|c| !c.is_empty()).unwrap().to_string())
            .collect();
        assert_eq!(names, ["wg1", "└ kid2", "└ deep", "gre1", "└ kid1"]);
    }

    fn gre_status(name: &str, options: &[&str]) -> LineStatus {
        LineStatus {
            options: options.iter().map(|o| o.to_string()).collect(),
            ..crate::control::gre_status(name)
        }
    }

    #[test]
    fn an_encrypted_line_shows_its_type_as_encrypted() {
        let lines = [
            gre_status("sec", &["--encrypt"]),
            gre_status("plain", &["--key", "7"]),
        ];
        let table = table(&lines);
        let types: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|r| r.split_whitespace().nth(2).unwrap())
            .collect();
        assert_eq!(types, ["GRE+ESP", "GRE"], "{table}");
        assert!(detail(&lines[0]).contains("type:            gre+esp\n"));
        assert!(detail(&lines[1]).contains("type:            gre\n"));
    }

    #[test]
    fn handshake_age_reads_naturally() {
        assert_eq!(age(None), "never");
        assert_eq!(age(Some(5)), "5s ago");
        assert_eq!(age(Some(125)), "2m5s ago");
    }
}

//! The Debian package: built by the one documented command (`packaging/build-deb.sh`,
//! here from the test build's binary so the suite does not compile a release build),
//! then inspected: its control fields, every file it should hold, the unit as packaged
//! (its Exec paths are the package's binary, and `systemd-analyze verify` accepts it
//! with that binary in /usr/bin, through an overlay in a mount namespace of its own),
//! the man pages of every command and the completions made by the packaged binary.

mod common;

use std::path::Path;
use std::process::Command;

use common::require_root_and_tools;

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_debian_package_holds_the_binary_unit_config_man_pages_and_completions() {
    if !require_root_and_tools(&[
        "dpkg-deb",
        "strip",
        "objdump",
        "gzip",
        "systemd-analyze",
        "unshare",
        "bash",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(root().join("packaging/build-deb.sh"))
        .env("TWNODE_BIN", env!("CARGO_BIN_EXE_twnode"))
        .env("TWNODE_DEB_DIR", dir.path()));
    let deb = out.trim().to_string();
    assert!(
        deb.starts_with(dir.path().to_str().unwrap())
            && deb.contains(&format!("/twnode_{}_", env!("CARGO_PKG_VERSION")))
            && deb.ends_with(".deb"),
        "{deb}"
    );

    let fields = run(Command::new("dpkg-deb").args([
        "-f",
        &deb,
        "Package",
        "Version",
        "Depends",
        "Recommends",
    ]));
    for said in [
        "Package: twnode".to_string(),
        format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Depends: libc6 (>= 2.".to_string(),
        "Recommends: wireguard-tools".to_string(),
    ] {
        assert!(fields.contains(&said), "{said:?} not in:\n{fields}");
    }

    let listing = run(Command::new("dpkg-deb").args(["-c", &deb]));
    let mut expected = vec![
        "./usr/bin/twnode".to_string(),
        "./lib/systemd/system/twnode.service".to_string(),
        "./usr/share/doc/twnode/examples/twnode.toml.example".to_string(),
        "./usr/share/doc/twnode/copyright".to_string(),
        "./usr/share/bash-completion/completions/twnode".to_string(),
        "./usr/share/zsh/vendor-completions/_twnode".to_string(),
        "./usr/share/fish/vendor_completions.d/twnode.fish".to_string(),
    ];
    for page in [
        "twnode",
        "twnode-daemon",
        "twnode-init",
        "twnode-genkey",
        "twnode-pubkey",
        "twnode-reload",
        "twnode-completions",
        "twnode-man",
        "twnode-line",
        "twnode-line-create",
        "twnode-line-list",
        "twnode-line-show",
        "twnode-line-show-peer",
        "twnode-line-delete",
    ] {
        expected.push(format!("./usr/share/man/man1/{page}.1.gz"));
    }
    for file in &expected {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {file}"))),
            "{file} not in the package:\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .all(|l| l.contains(" root/root ") && !l.contains("/usr/local")),
        "owned by root, nothing under /usr/local:\n{listing}"
    );

    let x = dir.path().join("x");
    run(Command::new("dpkg-deb").args(["-x", &deb, x.to_str().unwrap()]));
    let bin = x.join("usr/bin/twnode");
    let version = run(Command::new(&bin).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("twnode {}", env!("CARGO_PKG_VERSION"))
    );

    // The unit as packaged: its paths are where the package puts the binary.
    let unit_path = x.join("lib/systemd/system/twnode.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for directive in [
        "ExecStart=/usr/bin/twnode daemon",
        "ExecStartPre=+/usr/bin/twnode init",
        "RuntimeDirectory=twnode wireguard",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == directive),
            "{directive} not in the packaged unit"
        );
    }
    assert!(
        !unit.contains("/usr/local/bin"),
        "a source-install path left:\n{unit}"
    );
    // systemd-analyze checks that the Exec binaries exist: the package's /usr/bin laid
    // over the host's, in a mount namespace of this command alone.
    let script = format!(
        "mount -t overlay twnode-pkg -o lowerdir={}:/usr/bin /usr/bin && \
         systemd-analyze verify {} 2>&1",
        x.join("usr/bin").display(),
        unit_path.display()
    );
    let verify = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "systemd-analyze verify:\n{said}");
    let warnings: Vec<&str> = said.lines().filter(|l| l.contains("twnode")).collect();
    assert!(warnings.is_empty(), "systemd-analyze warns:\n{said}");

    // The example config, as in the source tree.
    assert_eq!(
        std::fs::read(x.join("usr/share/doc/twnode/examples/twnode.toml.example")).unwrap(),
        std::fs::read(root().join("packaging/twnode.toml.example")).unwrap()
    );

    // Man pages: roff, one per command, and the options are in them.
    let page = |name: &str| {
        run(Command::new("gzip").args([
            "-dc",
            x.join(format!("usr/share/man/man1/{name}.1.gz"))
                .to_str()
                .unwrap(),
        ]))
    };
    let create = page("twnode-line-create");
    assert!(create.contains(".TH twnode-line-create 1"), "{create}");
    for option in ["preshared\\-key", "listen\\-port", "keepalive"] {
        assert!(
            create.contains(option),
            "{option} not in the page:\n{create}"
        );
    }
    assert!(page("twnode").contains(".SH SUBCOMMANDS"));

    // Completions: what the binary prints, and bash loads them.
    let bash = x.join("usr/share/bash-completion/completions/twnode");
    assert_eq!(
        std::fs::read_to_string(&bash).unwrap(),
        run(Command::new(&bin).args(["completions", "bash"]))
    );
    let loaded = run(Command::new("bash").args([
        "-c",
        &format!("source {} && complete -p twnode", bash.display()),
    ]));
    assert!(loaded.contains("twnode"), "{loaded}");
    let zsh = std::fs::read_to_string(x.join("usr/share/zsh/vendor-completions/_twnode")).unwrap();
    assert!(zsh.starts_with("#compdef twnode"), "{zsh}");
    let fish =
        std::fs::read_to_string(x.join("usr/share/fish/vendor_completions.d/twnode.fish")).unwrap();
    assert!(fish.contains("complete -c twnode"), "{fish}");
    for sub in ["line", "completions", "man", "daemon"] {
        assert!(fish.contains(sub), "{sub} not completed by fish");
    }
}

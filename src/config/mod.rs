//! The TOML configuration: raw serde structs ([`raw`]) are turned by `TryFrom`
//! ([`validate`]) into a validated model ([`model`]: lines of the newtypes in [`names`],
//! IP tunnel options in [`iptunnel`], ESP in [`esp`]; policy groups, the default exit
//! and the failover settings in [`policy`]); [`diff`] tells a reload which lines changed.
//!
//! Rules: everything that can be checked without looking at the host is checked at load
//! time (duplicate names, unknown line parents, cycles, VIP and port clashes, MTU bounds);
//! the file is written atomically (temp file, fsync, rename) with mode 0600; a file that
//! holds private keys and is readable by other users is refused, as ssh refuses such keys.

pub mod diff;
pub mod esp;
pub mod iptunnel;
pub mod metrics;
pub mod model;
pub mod names;
pub mod policy;
pub mod raw;
pub mod setting;
#[cfg(test)]
pub(crate) mod testdata;
pub mod validate;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use crate::tunnel::keys::{KeyError, PrivateKey, PublicKey};
pub use diff::{diff, Diff};
pub use iptunnel::IpTunnel;
pub use model::{Config, Line, LineKind, WireGuard};
pub use names::{LineName, Mode, Mtu, Port};
pub use setting::{Flags, Origin, Setting};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/twnode/twnode.toml";

/// A configuration problem, always naming the file or the key that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("cannot read", "cannot write").
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, or a key has the wrong type or is unknown.
    ///
    /// One line, `file:line:column`, as compilers print it: toml's own report spans
    /// several lines (a source excerpt with a caret), so it is not kept as the source.
    #[error("{path}:{line}:{column}: {key}: {message}; fix the file and try again")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// TOML key path where the error sits, e.g. `line[0].wireguard.listen_port`.
        key: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting as the user named it: a TOML key path, e.g.
        /// `line[1] ("tunnel_base").peer_port`, or a `line create` argument, e.g.
        /// `--peer-port` (see [`setting`]).
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The directory of the config (or of the state) is not private to root and us.
    #[error(
        "{path} is writable by other users or owned by another user (owner uid {owner}, \
         mode {mode:04o}), so they could replace the files in it; run `chown root {path} && \
         chmod go-w {path}` and try again"
    )]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its mode bits.
        mode: u32,
    },
    /// The file holds private keys (WireGuard) or ESP keys but other users can read it.
    #[error(
        "{path} holds private keys (WireGuard or ESP) but is readable by other users \
         (mode {mode:04o}); run `chmod 600 {path}` and try again"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Parses and validates configuration text; `origin` names it in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
    Config::try_from(raw)
}

/// Turns toml's multi-line report into a [`ConfigError::Parse`]: position and key
/// path from the error's span, the message joined onto one line.
fn parse_error(text: &str, origin: &Path, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map_or(0, |s| s.start).min(text.len());
    let offset = (0..=offset)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigError::Parse {
        path: origin.to_path_buf(),
        line,
        column,
        key: key_at(text, line_start),
        message,
    }
}

/// The key path of the TOML line starting at byte `line_start`: the last table header
/// above it (`[[line]]` tables numbered from 0) plus the key assigned on that line.
fn key_at(text: &str, line_start: usize) -> String {
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut table = String::new();
    for l in text[..line_start].lines() {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = match arrays.iter_mut().find(|(a, _)| *a == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    arrays.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            let name = name.trim();
            // `[line.wireguard]` belongs to the latest `[[line]]`.
            table = match arrays
                .iter()
                .find(|(a, _)| name.starts_with(&format!("{a}.")))
            {
                Some((a, n)) => format!("{a}[{n}]{}", &name[a.len()..]),
                None => name.to_string(),
            };
        }
    }
    let this = text[line_start..].lines().next().unwrap_or("").trim();
    if this.starts_with('[') {
        // The error is in a table header: the header, as written, is the key.
        return this.to_string();
    }
    // A line without `=` continues a multi-line value: only its table is known.
    let key = this.split_once('=').map_or("", |(k, _)| k.trim());
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".to_string(),
        (true, false) => key.to_string(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// Loads the configuration file. A missing file is an empty configuration (a fresh node
/// before its first `line create`); anything else wrong is an error.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                action: "cannot read",
                source,
            })
        }
    };
    let config = parse(&text, path).map_err(|e| match e {
        // The model's checks know the key, not the file.
        ConfigError::Invalid { key, message } => ConfigError::Invalid {
            key: format!("{}: {key}", path.display()),
            message,
        },
        e => e,
    })?;
    if config.has_private_keys() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            check_private_dir(dir)?;
        }
        let mode = fs::metadata(path)
            .map_err(|source| ConfigError::Io {
                path: path.to_path_buf(),
                action: "cannot stat",
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(config)
}

/// Refuses a directory that someone other than root and this user could write to, or
/// that belongs to another user: whoever can write there can replace the config file
/// (and the keys in it) between two of our writes.
pub fn check_private_dir(dir: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(|source| ConfigError::Io {
        path: dir.to_path_buf(),
        action: "cannot stat directory",
        source,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    let owner = meta.uid();
    let sticky = mode & 0o1000 != 0;
    if (owner != 0 && owner != me) || (mode & 0o022 != 0 && !sticky) {
        return Err(ConfigError::UnsafeDirectory {
            path: dir.to_path_buf(),
            owner,
            mode,
        });
    }
    Ok(())
}

/// Writes the configuration atomically: a 0600 temp file with an unpredictable name,
/// created exclusively (never through a symlink) in the same directory, fsync, rename
/// over the old file, fsync the directory. A crash leaves the old or the new file, never
/// half of one. The directory is created (0700) if missing, and refused if others can
/// write to it ([`check_private_dir`]).
pub fn save(config: &Config, path: &Path) -> Result<(), ConfigError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ConfigError::Io {
            path: p,
            action,
            source,
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create directory", dir))?;
    }
    check_private_dir(dir)?;
    let text = config.to_toml();
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    // An unpredictable name, created only if nothing (not even a symlink) is there.
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{:016x}",
        file_name.as_deref().unwrap_or("twnode.toml"),
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("cannot create", &tmp))?;
        // The mode given to open() is filtered by the umask: set it explicitly.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("cannot chmod", &tmp))?;
        f.write_all(text.as_bytes())
            .map_err(io("cannot write", &tmp))?;
        f.sync_all().map_err(io("cannot fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("cannot rename into place", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot fsync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn save_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/twnode.toml");
        let cfg = parse(testdata::SERVER_TOML, Path::new("x")).unwrap();
        save(&cfg, &path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), cfg);
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn world_readable_file_with_private_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("twnode.toml");
        fs::write(&path, testdata::SERVER_TOML).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Permissions { mode: 0o644, .. }));
        assert!(msg.contains("chmod 600"), "{msg}");
    }

    #[test]
    fn a_directory_others_can_write_is_refused_for_keys_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let path = open.join("twnode.toml");
        let cfg = parse(testdata::SERVER_TOML, Path::new("x")).unwrap();
        let err = save(&cfg, &path).unwrap_err();
        assert!(
            matches!(err, ConfigError::UnsafeDirectory { mode: 0o777, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        assert_eq!(fs::read_dir(&open).unwrap().count(), 0, "nothing written");
        fs::write(&path, testdata::SERVER_TOML).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load(&path),
            Err(ConfigError::UnsafeDirectory { .. })
        ));
        // A sticky directory (like /tmp) keeps others from replacing our files.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(load(&path).unwrap(), cfg);
        save(&cfg, &path).unwrap();
    }

    #[test]
    fn missing_file_is_an_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn malformed_toml_names_file_line_and_column() {
        let err = parse("[[line]]\nname = \n", Path::new("/etc/twnode/twnode.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/twnode/twnode.toml:2:8: line[0].name: "),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = testdata::SERVER_TOML.replace("mtu = 1420", "mtu = 1420\ncolour = \"red\"");
        let msg = parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(msg.contains("t.toml:10:1: line[0].colour: "), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn parse_error_key_path_counts_line_tables_and_subtables() {
        let text = testdata::SERVER_TOML.replace("peer_port = 51821", "peer_port = \"x\"");
        let msg = parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(msg.contains("line[1].wireguard.peer_port"), "{msg}");
        let text = testdata::SERVER_TOML.replace("[line.wireguard]", "[line.wireguard");
        let msg = parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(msg.starts_with("t.toml:11:16: [line.wireguard: "), "{msg}");
    }
}

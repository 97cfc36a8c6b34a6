//! The durable ESP sequence-number mark of one outbound SA: the promise that no number
//! at or above it has ever been sent under that SA's key.
//!
//! Before a line sends a sequence number, a mark above it is on disk (temp file, fsync,
//! rename, fsync of the directory; mode 0600 in a 0700 directory). At start the line
//! reads the mark and begins there, so after a restart, a crash, a power cut or a clock
//! step no number (and so no AES-GCM or ChaCha20-Poly1305 nonce) is used twice: numbers
//! between the last one sent and the mark are skipped, never repeated. Marks move in
//! blocks of [`crate::tunnel::esp::RESERVE_BLOCK`] numbers, written by a task off the
//! packet path half a block ahead of need (see [`crate::tunnel::esp::EspCore`]).
//!
//! One file per outbound SA, named by [`crate::tunnel::esp::SaKeys::fingerprint`]
//! (`esp-<16 hex>.seq`): renaming a line keeps its mark, new keys start afresh. The file
//! holds the mark in decimal and a newline; a file that does not read as that stops the
//! line from starting rather than risk a repeat.
//!
//! The same format keeps the inbound SA's replay floor (`esp-<16 hex>.rx`): the highest
//! sequence number accepted, written every block of packets and exactly at a clean
//! stop, so that a restarted receiver refuses what it accepted before (after a crash,
//! at most the packets of the last block could be replayed once).
//!
//! These files are what static keying's nonce safety rests on, so: a line whose mark
//! is missing does not start unless told that its SA is new ([`SeqStore::load_existing`]
//! and `dataplane::setup`), and the daemon holds [`StateDirLock`] on the directory for
//! its whole life, so two daemons never share it. What no file can catch, a directory
//! rolled back to an older copy, is why twnode-to-twnode lines use epoch keying, which
//! needs none of this.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::DataplaneError;

/// Where one SA's mark lives.
#[derive(Debug, Clone)]
pub struct SeqStore {
    path: PathBuf,
}

impl SeqStore {
    /// The store for the SA with this fingerprint under `dir`.
    pub fn new(dir: &Path, fingerprint: &str) -> SeqStore {
        SeqStore {
            path: dir.join(format!("esp-{fingerprint}.seq")),
        }
    }

    /// Where the replay floor of the inbound SA with this fingerprint lives: the same
    /// format, `esp-<16 hex>.rx`.
    pub fn replay_floor(dir: &Path, fingerprint: &str) -> SeqStore {
        SeqStore {
            path: dir.join(format!("esp-{fingerprint}.rx")),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored mark; 0 when no file exists (a new SA).
    pub fn load(&self) -> Result<u64, DataplaneError> {
        Ok(self.load_existing()?.unwrap_or(0))
    }

    /// The stored mark; `None` when no file exists.
    pub fn load_existing(&self) -> Result<Option<u64>, DataplaneError> {
        let bad = |what: String| DataplaneError::State {
            path: self.path.clone(),
            what,
        };
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
                bad(
                    "does not hold a sequence-number mark (one decimal number); \
                     remove it only if the line's keys were changed on both ends"
                        .into(),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(bad(format!("cannot be read: {e}"))),
        }
    }

    /// Makes `mark` durable: after this returns Ok, a restart begins at `mark` or later.
    pub fn store(&self, mark: u64) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // A name no other writer uses: a write still running on a blocking thread when
        // a line stops cannot mix its bytes with the final one's.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        ));
        let tmp = PathBuf::from(tmp);
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{mark}")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        fs::File::open(dir)?.sync_all()
    }
}

/// The daemon's hold on its state directory: an exclusive `flock` on `<dir>/lock`,
/// released when this value is dropped or the process ends (even by SIGKILL). Two
/// daemons on one directory would each send from the same sequence-number marks.
#[derive(Debug)]
pub struct StateDirLock {
    _file: fs::File,
}

/// The file in the state directory that [`StateDirLock`] locks; it holds the pid of
/// the daemon that holds it.
pub const LOCK_FILE: &str = "lock";

impl StateDirLock {
    /// Locks `dir` (created 0700 if missing), or says which daemon holds it.
    pub fn acquire(dir: &Path) -> Result<StateDirLock, DataplaneError> {
        let path = dir.join(LOCK_FILE);
        let bad = |what: String| DataplaneError::StateDir {
            dir: dir.to_path_buf(),
            what,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| bad(format!("cannot be created: {e}")))?;
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                bad(format!(
                    "its lock file {} cannot be opened: {e}",
                    path.display()
                ))
            })?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(bad(format!("cannot be locked: {e}")));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("another twnode daemon (pid {pid})"),
                Err(_) => "another twnode daemon".to_string(),
            };
            return Err(bad(format!(
                "is in use by {holder}; two daemons sharing it could send the same ESP \
                 sequence numbers twice: stop that daemon, or give this one its own \
                 --state-dir"
            )));
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        written.map_err(|e| {
            bad(format!(
                "its lock file {} cannot be written: {e}",
                path.display()
            ))
        })?;
        Ok(StateDirLock { _file: file })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_sa_starts_at_zero_and_a_stored_mark_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = SeqStore::new(&dir.path().join("state"), "00112233aabbccdd");
        assert_eq!(s.load().unwrap(), 0);
        s.store(1 << 20).unwrap();
        assert_eq!(s.load().unwrap(), 1 << 20);
        s.store(3 << 20).unwrap();
        assert_eq!(
            SeqStore::new(&dir.path().join("state"), "00112233aabbccdd")
                .load()
                .unwrap(),
            3 << 20
        );
        let mode = fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(dir.path().join("state"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let names: Vec<_> = fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }

    #[test]
    fn a_garbled_file_stops_the_line_instead_of_guessing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SeqStore::new(dir.path(), "ff");
        fs::write(s.path(), "twelve\n").unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("esp-ff.seq") && e.contains("mark"), "{e}");
    }

    #[test]
    fn a_missing_mark_is_told_apart_from_a_stored_zero() {
        let dir = tempfile::tempdir().unwrap();
        let s = SeqStore::new(dir.path(), "aa");
        assert_eq!(s.load_existing().unwrap(), None);
        s.store(0).unwrap();
        assert_eq!(s.load_existing().unwrap(), Some(0));
    }

    #[test]
    fn a_second_lock_on_one_state_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = StateDirLock::acquire(&state).unwrap();
        let text = fs::read_to_string(state.join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock locks belong to the open file: a second open in this process conflicts
        // as a second daemon's would.
        let e = StateDirLock::acquire(&state).unwrap_err().to_string();
        assert!(
            e.contains(&state.display().to_string())
                && e.contains(&format!("pid {}", std::process::id()))
                && e.contains("--state-dir"),
            "{e}"
        );
        drop(held);
        StateDirLock::acquire(&state).unwrap();
        let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

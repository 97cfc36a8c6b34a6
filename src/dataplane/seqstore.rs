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

use std::fs;
use std::io::{self, Write};
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
        let bad = |what: String| DataplaneError::State {
            path: self.path.clone(),
            what,
        };
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                bad(
                    "does not hold a sequence-number mark (one decimal number); \
                     remove it only if the line's keys were changed on both ends"
                        .into(),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
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
}

//! The consumer's local offset store: the notes' "keep the pull history in the consumer, not in
//! the store". One small file per (store directory, consumer id) holds the committed position
//! of every topic-partition the consumer committed — the offset of the *next* record to read,
//! Kafka's convention.
//!
//! File: `<offset.store.dir>/<id>.offsets`, where `<id>` is the `group.id` (or `standalone`
//! without one) with every byte outside `[A-Za-z0-9._-]` written as `%XX`. Layout (text, see
//! `docs/FORMAT.md`, "The consumer's local offset store"):
//!
//! ```text
//! sluiceway-offsets 1
//! <topic> <partition> <offset>        one line per partition, sorted by (topic, partition)
//! crc32 <8 lowercase hex digits>       CRC-32 (IEEE) of every byte before this line
//! ```
//!
//! Invariants:
//! - Every write replaces the whole file atomically and durably ([`crate::atomic_file`]: temp
//!   file, fsync, rename, fsync directory), so after a crash the file holds the previous or the
//!   new commit, never a mix. The in-memory copy changes only after the write succeeded.
//! - A file that does not parse or whose CRC does not match is [`Error::CorruptOffsetStore`]
//!   naming the file and the problem; it is never silently treated as empty (that would replay
//!   or skip a whole log).
//! - Reads are bounded by [`OFFSET_STORE_BYTES_MAX`].
//! - **One opener at a time.** [`OffsetStore::open`] takes an exclusive advisory lock
//!   ([`std::fs::File::try_lock`]: `flock` on Unix, `LockFileEx` on Windows) on
//!   `<id>.offsets.lock` beside the store file and holds it until the store is dropped. Two
//!   consumers committing to one file would overwrite each other's positions, so a second
//!   opener — another process, or another consumer in this one (the lock belongs to the open
//!   file, not the process) — waits up to [`OFFSET_STORE_LOCK_WAIT_MS`] for a consumer that is
//!   just shutting down, then gets [`Error::InvalidConfig`] for `offset.store.dir` saying which
//!   file is in use and what to do. The operating system releases the lock when its holder
//!   exits, even by `kill -9`, so a lock file left behind is harmless; it is never deleted
//!   (deleting it could let a waiting opener lock the old file while a new opener locks a new
//!   one). The lock is advisory: only other `OffsetStore`s respect it.
//!
//! Thread safety: the store is `Send + Sync` and every method takes `&self`; the consumer
//! shares one between its tasks. It has two locks, taken in this order:
//! - `writing` serialises commits, from reading the map to publishing the new one, so commits
//!   reach the file in the order they reach memory: each file holds the union of every commit
//!   so far, and two commits never share the temp file;
//! - `offsets` guards the in-memory map and is held only to copy or replace it, never across
//!   file I/O, so [`OffsetStore::get`] answers while a commit writes and fsyncs.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::atomic_file::{sync_dir, write_atomically};
use crate::error::{Error, Result};
use crate::group::TopicPartition;
use crate::limits::{
    OFFSET_STORE_BYTES_MAX, OFFSET_STORE_LOCK_RETRY_MS, OFFSET_STORE_LOCK_WAIT_MS,
};

/// The id a consumer without `group.id` uses.
pub const STANDALONE_ID: &str = "standalone";
const HEADER: &str = "sluiceway-offsets 1";

/// Committed positions of one consumer id, backed by one file and locked against every other
/// opener while it lives (see the module docs).
#[derive(Debug)]
pub struct OffsetStore {
    path: PathBuf,
    /// `<id>.offsets.lock`, exclusively locked; dropping the handle releases the lock.
    _lock: fs::File,
    /// Held by a commit from reading `offsets` to publishing the new map (see the module docs).
    writing: Mutex<()>,
    /// The committed positions; held only to copy or replace the map.
    offsets: Mutex<BTreeMap<TopicPartition, u64>>,
}

// The consumer shares one store between its runtime's worker threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<OffsetStore>();
};

/// The file name for a consumer id (see the module docs).
pub fn file_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // "." and ".." are not file names.
    if out.chars().all(|c| c == '.') {
        out = out.replace('.', "%2E");
    }
    out.push_str(".offsets");
    out
}

/// The file's bytes for `offsets`.
pub fn encode(offsets: &BTreeMap<TopicPartition, u64>) -> Vec<u8> {
    let mut s = String::with_capacity(32 + offsets.len() * 32);
    s.push_str(HEADER);
    s.push('\n');
    for (tp, off) in offsets {
        s.push_str(&format!("{} {} {}\n", tp.topic, tp.partition, off));
    }
    let crc = crc32fast::hash(s.as_bytes());
    s.push_str(&format!("crc32 {crc:08x}\n"));
    s.into_bytes()
}

/// Parses a store file; `path` is for error messages.
pub fn decode(bytes: &[u8], path: &Path) -> Result<BTreeMap<TopicPartition, u64>> {
    let corrupt = |reason: String| Error::CorruptOffsetStore {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| corrupt(format!("not UTF-8 text: {e}")))?;
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or_else(|| corrupt("too short: no header and checksum lines".into()))?;
    let (body, trailer) = text.split_at(body_end);
    let crc_hex = trailer
        .strip_prefix("crc32 ")
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or_else(|| {
            corrupt(format!(
                "last line is not `crc32 <hex>` (truncated?): {:?}",
                trailer.trim_end()
            ))
        })?;
    let want = u32::from_str_radix(crc_hex, 16)
        .map_err(|_| corrupt(format!("bad checksum {crc_hex:?}")))?;
    let got = crc32fast::hash(body.as_bytes());
    if want != got {
        return Err(corrupt(format!(
            "checksum mismatch: file says {want:08x}, contents hash to {got:08x}"
        )));
    }
    let mut lines = body.lines();
    match lines.next() {
        Some(HEADER) => {}
        other => {
            return Err(corrupt(format!(
                "first line is {other:?}, expected {HEADER:?}"
            )));
        }
    }
    let mut out = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let mut parts = line.split(' ');
        let (Some(topic), Some(p), Some(o), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt(format!(
                "line {}: expected `<topic> <partition> <offset>`, got {line:?}",
                i + 2
            )));
        };
        let partition: u32 = p
            .parse()
            .map_err(|_| corrupt(format!("line {}: bad partition {p:?}", i + 2)))?;
        let offset: u64 = o
            .parse()
            .map_err(|_| corrupt(format!("line {}: bad offset {o:?}", i + 2)))?;
        if topic.is_empty()
            || out
                .insert(TopicPartition::new(topic, partition), offset)
                .is_some()
        {
            return Err(corrupt(format!(
                "line {}: empty or repeated topic-partition {topic}-{partition}",
                i + 2
            )));
        }
    }
    Ok(out)
}

/// The lock file of the store file `path`: `<id>.offsets.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Opens (creating it if needed) and exclusively locks the lock file of the store file `path`,
/// retrying for up to `wait` while another opener holds it.
fn lock_store(path: &Path, wait: Duration) -> Result<fs::File> {
    let lock = lock_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(|e| Error::io("open lock file", &lock, e))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(OFFSET_STORE_LOCK_RETRY_MS));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::InvalidConfig {
                    key: "offset.store.dir".into(),
                    reason: format!(
                        "the offset store {} is in use by another consumer (another process, \
                         or another client in this one, holds the lock on {}); give each \
                         consumer its own offset.store.dir or group.id, or close and drop the \
                         other consumer first",
                        path.display(),
                        lock.display()
                    ),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &lock, e)),
        }
    }
}

impl OffsetStore {
    /// Opens (creating the directory if needed), locks and reads the store of consumer `id` in
    /// `dir`. A missing file is an empty store; a damaged one is an error; a store another
    /// consumer holds for longer than [`OFFSET_STORE_LOCK_WAIT_MS`] is
    /// [`Error::InvalidConfig`] (`offset.store.dir`). Blocks while it waits: call it from a
    /// blocking context.
    pub fn open(dir: &Path, id: &str) -> Result<OffsetStore> {
        OffsetStore::open_waiting(dir, id, Duration::from_millis(OFFSET_STORE_LOCK_WAIT_MS))
    }

    /// [`OffsetStore::open`] with another bound on the wait for the lock.
    pub(crate) fn open_waiting(dir: &Path, id: &str, wait: Duration) -> Result<OffsetStore> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create offset store directory", dir, e))?;
        let path = dir.join(file_name(id));
        // Locked before reading: the holder may be about to replace the file.
        let lock = lock_store(&path, wait)?;
        let offsets = match fs::File::open(&path) {
            Ok(f) => {
                let mut bytes = Vec::new();
                f.take(OFFSET_STORE_BYTES_MAX + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| Error::io("read", &path, e))?;
                if bytes.len() as u64 > OFFSET_STORE_BYTES_MAX {
                    return Err(Error::CorruptOffsetStore {
                        path,
                        reason: format!("larger than {OFFSET_STORE_BYTES_MAX} bytes"),
                    });
                }
                decode(&bytes, &path)?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Make the directory entry durable before the first commit relies on it.
                sync_dir(dir)?;
                BTreeMap::new()
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        Ok(OffsetStore {
            path,
            _lock: lock,
            writing: Mutex::new(()),
            offsets: Mutex::new(offsets),
        })
    }

    /// The file backing this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The committed position of one partition.
    pub fn get(&self, tp: &TopicPartition) -> Option<u64> {
        self.offsets.lock().get(tp).copied()
    }

    /// A copy of every committed position.
    pub fn all(&self) -> BTreeMap<TopicPartition, u64> {
        self.offsets.lock().clone()
    }

    /// Merges `offsets` into the store and writes the file atomically and durably. On error the
    /// store (in memory and on disk) is unchanged. Concurrent commits are applied one after the
    /// other; readers see the previous positions until the write succeeded.
    pub fn commit(&self, offsets: impl IntoIterator<Item = (TopicPartition, u64)>) -> Result<()> {
        let offsets: Vec<(TopicPartition, u64)> = offsets.into_iter().collect();
        // Held until the new map is published, so the next commit starts from this one's result
        // and writes after it.
        let _writing = self.writing.lock();
        let mut next = self.offsets.lock().clone();
        let mut changed = false;
        for (tp, o) in offsets {
            changed |= next.insert(tp, o) != Some(o);
        }
        if !changed && self.path.exists() {
            return Ok(());
        }
        write_atomically(&self.path, &encode(&next))?;
        *self.offsets.lock() = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::ErrorCode;

    fn tp(t: &str, p: u32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn commit_then_reopen_reads_the_same_positions() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), "g1").unwrap();
        assert!(s.all().is_empty());
        s.commit([(tp("t", 0), 300), (tp("t", 2), 7), (tp("a.b", 1), 0)])
            .unwrap();
        s.commit([(tp("t", 0), 301)]).unwrap();
        drop(s); // releases the lock
        let s2 = OffsetStore::open(dir.path(), "g1").unwrap();
        assert_eq!(s2.get(&tp("t", 0)), Some(301));
        assert_eq!(s2.get(&tp("t", 2)), Some(7));
        assert_eq!(s2.get(&tp("a.b", 1)), Some(0));
        assert_eq!(s2.get(&tp("t", 1)), None);
        // Another id is another file.
        assert!(
            OffsetStore::open(dir.path(), "g2")
                .unwrap()
                .all()
                .is_empty()
        );
        assert!(
            !dir.path().join("g1.offsets.tmp").exists(),
            "no temp file is left behind"
        );
    }

    #[test]
    fn the_file_is_the_documented_text() {
        let mut m = BTreeMap::new();
        m.insert(tp("orders", 1), 42);
        m.insert(tp("orders", 0), 1000);
        let bytes = encode(&m);
        let body = "sluiceway-offsets 1\norders 0 1000\norders 1 42\n";
        let want = format!("{body}crc32 {:08x}\n", crc32fast::hash(body.as_bytes()));
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), want);
        // The worked example in docs/FORMAT.md.
        assert!(want.ends_with("crc32 6be9ec90\n"), "{want}");
        assert_eq!(decode(&bytes, Path::new("x")).unwrap(), m);
        assert_eq!(
            decode(&encode(&BTreeMap::new()), Path::new("x")).unwrap(),
            BTreeMap::new()
        );
    }

    #[test]
    fn ids_become_safe_file_names() {
        assert_eq!(file_name("standalone"), "standalone.offsets");
        assert_eq!(file_name("my group/1"), "my%20group%2F1.offsets");
        assert_eq!(file_name(".."), "%2E%2E.offsets");
    }

    #[test]
    fn a_damaged_file_is_a_clear_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), "g").unwrap();
        s.commit([(tp("t", 0), 300)]).unwrap();
        let path = s.path().to_owned();
        drop(s);
        let good = fs::read(&path).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "flipped digit",
                String::from_utf8(good.clone())
                    .unwrap()
                    .replace("300", "301")
                    .into_bytes(),
            ),
            ("truncated", good[..good.len() - 5].to_vec()),
            ("cut before the checksum", good[..good.len() - 16].to_vec()),
            ("empty", Vec::new()),
            ("garbage", vec![0xff, 0x00, 0x13]),
        ];
        for (what, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            let e = OffsetStore::open(dir.path(), "g").unwrap_err();
            assert_eq!(e.code(), ErrorCode::KafkaStorageError, "{what}");
            let msg = e.to_string();
            assert!(
                msg.contains("corrupt offset store") && msg.contains("g.offsets"),
                "{what}: {msg}"
            );
        }
    }

    #[test]
    fn a_failed_write_leaves_the_store_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("store");
        let s = OffsetStore::open(&sub, "g").unwrap();
        s.commit([(tp("t", 0), 5)]).unwrap();
        // Make the directory unusable: replace it with a file.
        fs::remove_dir_all(&sub).unwrap();
        fs::write(&sub, b"not a directory").unwrap();
        assert!(s.commit([(tp("t", 0), 6)]).is_err());
        assert_eq!(s.get(&tp("t", 0)), Some(5));
    }

    #[test]
    fn a_leftover_temp_file_from_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), "g").unwrap();
        s.commit([(tp("t", 0), 10)]).unwrap();
        drop(s);
        // A crash between writing the temp file and the rename leaves it behind, half written.
        fs::write(
            dir.path().join("g.offsets.tmp"),
            b"sluiceway-offsets 1\nt 0 9",
        )
        .unwrap();
        assert_eq!(
            OffsetStore::open(dir.path(), "g").unwrap().get(&tp("t", 0)),
            Some(10)
        );
    }

    fn in_use_reason(e: Error) -> String {
        match e {
            Error::InvalidConfig { key, reason } if key == "offset.store.dir" => reason,
            other => panic!("expected InvalidConfig for offset.store.dir, got {other:?}"),
        }
    }

    #[test]
    fn a_second_opener_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), "g").unwrap();
        s.commit([(tp("t", 0), 5)]).unwrap();
        // The public `open`, with its whole wait: the holder is alive throughout.
        let reason = in_use_reason(OffsetStore::open(dir.path(), "g").unwrap_err());
        assert!(
            reason.contains(&s.path().display().to_string())
                && reason.contains("in use by another consumer")
                && reason.contains("give each consumer its own offset.store.dir or group.id"),
            "{reason}"
        );
        // Another id in the same directory is another lock.
        OffsetStore::open_waiting(dir.path(), "h", Duration::ZERO).unwrap();
        drop(s);
        let s = OffsetStore::open_waiting(dir.path(), "g", Duration::ZERO).unwrap();
        assert_eq!(s.get(&tp("t", 0)), Some(5));
        assert!(dir.path().join("g.offsets.lock").exists());
    }

    #[test]
    fn a_store_released_while_the_opener_waits_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), "g").unwrap();
        s.commit([(tp("t", 0), 9)]).unwrap();
        // A consumer shutting down: the store is released well within the wait.
        let closing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(s);
        });
        let s = OffsetStore::open(dir.path(), "g").unwrap();
        assert_eq!(s.get(&tp("t", 0)), Some(9));
        closing.join().unwrap();
    }

    #[test]
    fn readers_do_not_wait_for_a_commit_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), "g").unwrap();
        s.commit([(tp("t", 0), 1)]).unwrap();
        // Stand in for a commit stuck in its write and fsync.
        let writing = s.writing.lock();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| tx.send((s.get(&tp("t", 0)), s.all().len())).unwrap());
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("get and all answer while a commit writes"),
                (Some(1), 1)
            );
            drop(writing);
        });
    }

    /// Each thread owns one partition and commits increasing positions to it: after every
    /// commit the file must hold that position, whatever the other threads committed meanwhile
    /// (a write that overtook a later one would lose it), and at the end the file is the union.
    #[test]
    fn concurrent_commits_reach_the_file_in_order() {
        const THREADS: u32 = 4;
        const COMMITS: u64 = 25;
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), "g").unwrap();
        std::thread::scope(|scope| {
            for p in 0..THREADS {
                let s = &s;
                scope.spawn(move || {
                    for o in 1..=COMMITS {
                        s.commit([(tp("t", p), o)]).unwrap();
                        let on_disk = decode(&fs::read(s.path()).unwrap(), s.path()).unwrap();
                        assert_eq!(on_disk.get(&tp("t", p)), Some(&o), "partition {p}");
                        assert_eq!(s.get(&tp("t", p)), Some(o));
                    }
                });
            }
        });
        let want: BTreeMap<_, _> = (0..THREADS).map(|p| (tp("t", p), COMMITS)).collect();
        assert_eq!(s.all(), want);
        drop(s);
        assert_eq!(OffsetStore::open(dir.path(), "g").unwrap().all(), want);
    }
}

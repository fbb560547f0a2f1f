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
//!
//! Not locked against a second process using the same directory and id: give each consumer
//! process its own id (or directory).

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::atomic_file::{sync_dir, write_atomically};
use crate::error::{Error, Result};
use crate::group::TopicPartition;
use crate::limits::OFFSET_STORE_BYTES_MAX;

/// The id a consumer without `group.id` uses.
pub const STANDALONE_ID: &str = "standalone";
const HEADER: &str = "sluiceway-offsets 1";

/// Committed positions of one consumer id, backed by one file.
#[derive(Debug)]
pub struct OffsetStore {
    path: PathBuf,
    offsets: BTreeMap<TopicPartition, u64>,
}

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

impl OffsetStore {
    /// Opens (creating the directory if needed) and reads the store of consumer `id` in `dir`.
    /// A missing file is an empty store; a damaged one is an error.
    pub fn open(dir: &Path, id: &str) -> Result<OffsetStore> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create offset store directory", dir, e))?;
        let path = dir.join(file_name(id));
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
        Ok(OffsetStore { path, offsets })
    }

    /// The file backing this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The committed position of one partition.
    pub fn get(&self, tp: &TopicPartition) -> Option<u64> {
        self.offsets.get(tp).copied()
    }

    /// Every committed position.
    pub fn all(&self) -> &BTreeMap<TopicPartition, u64> {
        &self.offsets
    }

    /// Merges `offsets` into the store and writes the file atomically and durably. On error the
    /// store (in memory and on disk) is unchanged.
    pub fn commit(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, u64)>,
    ) -> Result<()> {
        let mut next = self.offsets.clone();
        let mut changed = false;
        for (tp, o) in offsets {
            changed |= next.insert(tp, o) != Some(o);
        }
        if !changed && self.path.exists() {
            return Ok(());
        }
        write_atomically(&self.path, &encode(&next))?;
        self.offsets = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn tp(t: &str, p: u32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn commit_then_reopen_reads_the_same_positions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path(), "g1").unwrap();
        assert!(s.all().is_empty());
        s.commit([(tp("t", 0), 300), (tp("t", 2), 7), (tp("a.b", 1), 0)])
            .unwrap();
        s.commit([(tp("t", 0), 301)]).unwrap();
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
        let mut s = OffsetStore::open(dir.path(), "g").unwrap();
        s.commit([(tp("t", 0), 300)]).unwrap();
        let path = s.path().to_owned();
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
        let mut s = OffsetStore::open(&sub, "g").unwrap();
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
        let mut s = OffsetStore::open(dir.path(), "g").unwrap();
        s.commit([(tp("t", 0), 10)]).unwrap();
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
}

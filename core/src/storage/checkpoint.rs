//! The partition's checkpoint file and clean-shutdown marker.
//!
//! `checkpoint` holds, as text, the three offsets the log must remember across restarts:
//!
//! ```text
//! sluiceway-checkpoint 1
//! log_start_offset <u64>
//! high_watermark <u64>
//! recovery_point <u64>
//! crc32 <u32 over the lines above, hex>
//! ```
//!
//! It is replaced atomically: written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`,
//! and the directory fsynced, so a crash leaves either the old or the new file, never a mix. A
//! file that does not parse or whose CRC does not match is ignored with a warning (the log then
//! recovers from its first segment, which is slow but safe).
//!
//! `clean-shutdown` is an empty file written by `close()` after everything is flushed; `open()`
//! removes it before changing anything, so its presence means "nothing happened since a clean
//! close" and recovery can be skipped.

use std::fs;
use std::path::Path;

use crate::atomic_file::write_atomically_with;
use crate::error::{Error, Result};
use crate::file_io::{FileSystem, OpenMode};
use crate::types::Offset;

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
const HEADER: &str = "sluiceway-checkpoint 1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) log_start_offset: Offset,
    pub(crate) high_watermark: Offset,
    pub(crate) recovery_point: Offset,
}

fn body(c: &Checkpoint) -> String {
    format!(
        "{HEADER}\nlog_start_offset {}\nhigh_watermark {}\nrecovery_point {}\n",
        c.log_start_offset.0, c.high_watermark.0, c.recovery_point.0
    )
}

pub(crate) use crate::atomic_file::sync_dir_with as sync_dir;

pub(crate) fn write(fs: &dyn FileSystem, dir: &Path, c: &Checkpoint) -> Result<()> {
    let mut text = body(c);
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("crc32 {crc:08x}\n"));
    // Writes `checkpoint.tmp`, fsyncs, renames, fsyncs the directory (recovery removes a leftover `*.tmp`).
    write_atomically_with(fs, &dir.join(CHECKPOINT_FILE), text.as_bytes())
}

/// The checkpoint, or `None` when absent or unreadable (logged).
pub(crate) fn read(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::warn!(path = %path.display(), "checkpoint is not text; ignoring it");
            return Ok(None);
        }
        Err(e) => return Err(Error::io("read checkpoint", &path, e)),
    };
    let parsed = parse(&text);
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "checkpoint is damaged; ignoring it and recovering the whole log");
    }
    Ok(parsed)
}

fn parse(text: &str) -> Option<Checkpoint> {
    let (head, crc_line) = text.trim_end_matches('\n').rsplit_once('\n')?;
    let crc = u32::from_str_radix(crc_line.strip_prefix("crc32 ")?, 16).ok()?;
    let head = format!("{head}\n");
    if crc32fast::hash(head.as_bytes()) != crc {
        return None;
    }
    let mut lines = head.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut field = |name: &str| -> Option<Offset> {
        let v = lines.next()?.strip_prefix(name)?.strip_prefix(' ')?;
        v.parse().ok().map(Offset)
    };
    let c = Checkpoint {
        log_start_offset: field("log_start_offset")?,
        high_watermark: field("high_watermark")?,
        recovery_point: field("recovery_point")?,
    };
    let round_trip = body(&c) == head;
    round_trip.then_some(c)
}

pub(crate) fn write_clean_shutdown(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let f = fs
        .open(&path, OpenMode::Truncate)
        .map_err(|e| Error::io("create clean-shutdown marker", &path, e))?;
    f.sync_all()
        .map_err(|e| Error::io("fsync clean-shutdown marker", &path, e))?;
    sync_dir(fs, dir)
}

/// Removes the clean-shutdown marker (durably) and says whether it was there.
pub(crate) fn take_clean_shutdown(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    match fs.remove_file(&path) {
        Ok(()) => {
            sync_dir(fs, dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove clean-shutdown marker", &path, e)),
    }
}

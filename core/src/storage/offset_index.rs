//! `OffsetIndex`: a segment's sparse `.index` file, Kafka's `OffsetIndex`.
//!
//! Format: a flat array of 8-byte entries, `relative offset u32 BE · position u32 BE`, where the
//! relative offset is an entry's offset field minus the segment's base offset (for a compressed
//! wrapper that is its *last* inner offset) and the position is the byte position of that entry
//! in the `.log`. One entry is added every `index.interval.bytes` of log; the first entry of a
//! segment is never indexed (position 0 is implied).
//!
//! Invariants: relative offsets and positions both strictly increase; every position is the
//! start of a whole entry inside the log's published size.
//!
//! The active segment's index file is preallocated to `segment.index.bytes` and memory-mapped
//! (memmap2); a full index rolls the segment. Sealing (roll, close) trims the file to its
//! entries, so at rest `file length / 8` is the entry count. The index is derived data: it is
//! rebuilt from the `.log` after an unclean shutdown or whenever [`OffsetIndex::sanity_check`]
//! fails. Not thread-safe: the segment holds it behind a lock.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::file_io::{DataFile, FileSystem, OpenMode};
use crate::limits::OFFSET_INDEX_ENTRY_BYTES;
use crate::types::{FilePosition, Offset, RelativeOffset};

const ENTRY: usize = OFFSET_INDEX_ENTRY_BYTES as usize;

/// Maps `file` read-write for its current length.
pub(super) fn map(file: &File, path: &Path) -> Result<MmapMut> {
    // SAFETY: the file lives in a partition directory owned by this process (no other process
    // writes it), the map covers exactly the file's current length, and the length is never
    // changed while this map is alive: `IndexFile::resize` drops the map before `set_len` and
    // maps again after, and a rebuilt index is a new file (the old one is unlinked, never
    // truncated, so maps still held by readers stay valid). All access goes through the
    // `&[u8]`/`&mut [u8]` views, under the owning segment's lock.
    #[allow(unsafe_code)]
    let map = unsafe { MmapMut::map_mut(file) };
    map.map_err(|e| Error::io("memory-map", path, e))
}

/// A memory-mapped file of fixed-size entries: the plumbing shared by [`OffsetIndex`] and
/// `TimeIndex`. `entries` counts the valid entries; the rest of the map is preallocated room.
#[derive(Debug)]
pub(super) struct IndexFile {
    pub(super) path: PathBuf,
    file: Box<dyn DataFile>,
    pub(super) mmap: MmapMut,
    entry_bytes: usize,
    pub(super) entries: usize,
    /// Entries that fit the mapped length.
    pub(super) capacity: usize,
}

impl IndexFile {
    /// Opens (creating if absent) the file at `path`. Its entries are `file length / entry size`
    /// (a trimmed file). When `capacity_bytes` is `Some`, the file is then grown to that size so
    /// entries can be appended (the active segment).
    pub(super) fn open(
        fs: &dyn FileSystem,
        path: PathBuf,
        entry_bytes: usize,
        capacity_bytes: Option<u32>,
    ) -> Result<IndexFile> {
        let file = fs
            .open(&path, OpenMode::OpenOrCreate)
            .map_err(|e| Error::io("open index", &path, e))?;
        let len = file
            .file_len()
            .map_err(|e| Error::io("stat index", &path, e))?;
        let entries = usize::try_from(len).unwrap_or(usize::MAX) / entry_bytes;
        let mut index = IndexFile {
            mmap: map(file.os_file(), &path)?,
            path,
            file,
            entry_bytes,
            entries,
            capacity: entries,
        };
        if let Some(cap) = capacity_bytes {
            index.resize(cap as usize / entry_bytes)?;
        } else if len % entry_bytes as u64 != 0 {
            // A partial trailing entry: cut the map to whole entries.
            index.resize(entries)?;
        }
        Ok(index)
    }

    /// Creates a fresh, empty file at `path`, with room for `capacity_bytes`. A file already
    /// there is unlinked first rather than truncated: a reader may still have it mapped (a
    /// segment replaced by truncation), and shrinking a mapped file would fault that reader.
    pub(super) fn create(
        fs: &dyn FileSystem,
        path: PathBuf,
        entry_bytes: usize,
        capacity_bytes: u32,
    ) -> Result<IndexFile> {
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("replace index", &path, e)),
        }
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create index", &path, e))?;
        let mut index = IndexFile {
            mmap: map(file.os_file(), &path)?,
            path,
            file,
            entry_bytes,
            entries: 0,
            capacity: 0,
        };
        index.resize(capacity_bytes as usize / entry_bytes)?;
        Ok(index)
    }

    /// Sets the file (and map) to room for `capacity` entries, never below the entries held.
    fn resize(&mut self, capacity: usize) -> Result<()> {
        let capacity = capacity.max(self.entries);
        // The map must not outlive a length change: replace it with an empty one first.
        self.mmap = MmapMut::map_anon(0).map_err(|e| Error::io("memory-map", &self.path, e))?;
        self.file
            .set_len((capacity * self.entry_bytes) as u64)
            .map_err(|e| Error::io("resize index", &self.path, e))?;
        self.mmap = map(self.file.os_file(), &self.path)?;
        self.capacity = capacity;
        Ok(())
    }

    pub(super) fn slot(&self, i: usize) -> &[u8] {
        &self.mmap[i * self.entry_bytes..(i + 1) * self.entry_bytes]
    }

    pub(super) fn push(&mut self, entry: &[u8]) {
        debug_assert!(self.entries < self.capacity && entry.len() == self.entry_bytes);
        let at = self.entries * self.entry_bytes;
        self.mmap[at..at + self.entry_bytes].copy_from_slice(entry);
        self.entries += 1;
    }

    /// Forces the mapped entries to disk.
    pub(super) fn flush(&self) -> Result<()> {
        self.mmap
            .flush()
            .and_then(|()| self.file.map_flushed())
            .map_err(|e| Error::io("flush index", &self.path, e))
    }

    /// Seals the file: flushes it and trims it to its entries.
    pub(super) fn trim(&mut self) -> Result<()> {
        self.flush()?;
        self.resize(self.entries)?;
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync index", &self.path, e))
    }

    /// Grows a trimmed file back to `capacity_bytes` so it can take appends again.
    pub(super) fn grow(&mut self, capacity_bytes: u32) -> Result<()> {
        self.resize(capacity_bytes as usize / self.entry_bytes)
    }
}

#[derive(Debug)]
pub(crate) struct OffsetIndex {
    base_offset: Offset,
    file: IndexFile,
}

impl OffsetIndex {
    /// Opens an existing (trimmed) index, or creates an empty one; see [`IndexFile::open`].
    pub(crate) fn open(
        fs: &dyn FileSystem,
        path: PathBuf,
        base_offset: Offset,
        capacity_bytes: Option<u32>,
    ) -> Result<OffsetIndex> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::open(fs, path, ENTRY, capacity_bytes)?,
        })
    }

    /// Creates a fresh, empty index (replacing any file there) with room for `capacity_bytes`.
    pub(crate) fn create(
        fs: &dyn FileSystem,
        path: PathBuf,
        base_offset: Offset,
        capacity_bytes: u32,
    ) -> Result<OffsetIndex> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::create(fs, path, ENTRY, capacity_bytes)?,
        })
    }

    pub(crate) fn entries(&self) -> usize {
        self.file.entries
    }

    pub(crate) fn is_full(&self) -> bool {
        self.file.entries >= self.file.capacity
    }

    fn entry(&self, i: usize) -> (RelativeOffset, FilePosition) {
        let b = self.file.slot(i);
        (
            RelativeOffset(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            FilePosition(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
        )
    }

    pub(crate) fn last_entry(&self) -> Option<(Offset, FilePosition)> {
        let i = self.file.entries.checked_sub(1)?;
        let (rel, pos) = self.entry(i);
        Some((rel.absolute(self.base_offset), pos))
    }

    /// Appends an entry; returns `false` (and does nothing) when the index is full. The caller
    /// keeps the invariants (strictly increasing offset and position); checked in debug builds.
    pub(crate) fn append(&mut self, offset: Offset, position: FilePosition) -> bool {
        if self.is_full() {
            return false;
        }
        let rel = offset
            .relative_to(self.base_offset)
            .expect("index entry offset fits the segment");
        if let Some((last_offset, last_pos)) = self.last_entry() {
            debug_assert!(
                offset > last_offset && position > last_pos,
                "offset index entries must increase"
            );
        }
        let mut entry = [0u8; ENTRY];
        entry[..4].copy_from_slice(&rel.0.to_be_bytes());
        entry[4..].copy_from_slice(&position.0.to_be_bytes());
        self.file.push(&entry);
        true
    }

    /// The position of the indexed entry with the largest offset ≤ `target`, or 0 (the segment's
    /// first entry) when there is none. Scanning from there finds `target`'s entry.
    pub(crate) fn lookup(&self, target: Offset) -> FilePosition {
        let Some(delta) = target.0.checked_sub(self.base_offset.0) else {
            return FilePosition(0);
        };
        let rel = u32::try_from(delta).unwrap_or(u32::MAX);
        // Entries are sorted by relative offset: binary search for the last one ≤ rel.
        let (mut lo, mut hi) = (0usize, self.file.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).0.0 <= rel {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            FilePosition(0)
        } else {
            self.entry(lo - 1).1
        }
    }

    /// Checks the invariants against what the segment holds: entries strictly increasing, every
    /// relative offset below `next_offset`, every position below `log_size`. Kafka runs the same
    /// check on load; a failure means "rebuild from the log".
    pub(crate) fn sanity_check(
        &self,
        next_offset: Offset,
        log_size: u32,
    ) -> std::result::Result<(), String> {
        let mut prev: Option<(RelativeOffset, FilePosition)> = None;
        for i in 0..self.file.entries {
            let (rel, pos) = self.entry(i);
            if rel.absolute(self.base_offset) >= next_offset {
                return Err(format!(
                    "entry {i} has offset {} at or past the segment's end {next_offset}",
                    rel.absolute(self.base_offset)
                ));
            }
            if pos.0 >= log_size {
                return Err(format!(
                    "entry {i} has position {pos} at or past the log's size {log_size}"
                ));
            }
            if let Some((p_rel, p_pos)) = prev
                && (rel <= p_rel || pos <= p_pos)
            {
                return Err(format!("entry {i} does not increase"));
            }
            prev = Some((rel, pos));
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.file.flush()
    }

    pub(crate) fn trim(&mut self) -> Result<()> {
        self.file.trim()
    }

    pub(crate) fn grow(&mut self, capacity_bytes: u32) -> Result<()> {
        self.file.grow(capacity_bytes)
    }
}

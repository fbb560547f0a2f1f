//! The file seam: every change the storage engine makes to disk — creating, writing, cutting,
//! fsyncing, renaming and removing files, fsyncing directories — and every read of segment data
//! goes through [`FileSystem`] and [`DataFile`]. [`OsFileSystem`] is the real one (the default
//! everywhere); `faulty::FaultyFileSystem` (`server`) is the test one that fails the Nth write
//! or fsync and simulates a crash (TigerBeetle's `src/testing/storage.zig` and raft-rs's
//! `MemStorage` are the models).
//!
//! Cost: one dynamic call per *file operation* — one positional write per appended set, one
//! `pread` per fetch, one fsync per flush — never one per message. A partition log holds an
//! `Arc<dyn FileSystem>`; each segment holds its `.log` as a `Box<dyn DataFile>`.
//!
//! What the seam does not cover, and why:
//! - Bytes written through a memory map (the `.index`/`.timeindex` entries) go straight to the
//!   page cache; the index tells its file when the map was flushed ([`DataFile::map_flushed`]),
//!   which is where the test file system takes its durable snapshot and can fail the msync.
//! - Listing a directory, `stat` (recovery's `read_dir`, retention's modification time) and
//!   whole-file reads of the checkpoint and producer-state snapshots go to the OS directly: they
//!   change nothing, and the test file system keeps the real files current.
//! - Creating directories: treated as durable at once (the log fsyncs the parent after creating
//!   its directory, but the test file system does not model directory entries of directories).

#[cfg(feature = "server")]
pub mod faulty;

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How [`FileSystem::open`] opens a file. Every mode opens read-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// The file must not exist yet; it is created empty.
    CreateNew,
    /// Opened as it is, created empty when absent.
    OpenOrCreate,
    /// Created empty, or cut to empty when present.
    Truncate,
}

/// Directory-level operations, and opening files (see the module docs).
pub trait FileSystem: Send + Sync + Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DataFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory, so that new, renamed and removed entries in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// One open file: positional reads and writes (no cursor, so readers and the writer share it).
pub trait DataFile: Send + Sync + Debug {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;

    /// [`read_exact_at`](Self::read_exact_at) into memory not initialised yet: Ok means every
    /// byte of `buf` was written. The fetch path reads this way (zeroing first cost as much as
    /// the read's own copy); this default zeroes, the real file does not.
    fn read_exact_uninit_at(&self, buf: &mut [MaybeUninit<u8>], pos: u64) -> io::Result<()> {
        buf.fill(MaybeUninit::new(0));
        // SAFETY: every element was initialised just above, and `MaybeUninit<u8>` has the
        // layout of `u8`.
        #[allow(unsafe_code)]
        let buf = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [u8]) };
        self.read_exact_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn file_len(&self) -> io::Result<u64>;
    /// fsync of the data and of the metadata needed to read it back (its length).
    fn sync_data(&self) -> io::Result<()>;
    fn sync_all(&self) -> io::Result<()>;
    /// The OS file under this one, only for memory-mapping it (the indexes).
    fn os_file(&self) -> &File;
    /// Called after a memory map of this file was flushed (msync) successfully: the point where
    /// bytes written through the map are durable. Nothing to do for a real file.
    fn map_flushed(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The real file system (std and `pread(2)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFileSystem;

impl OsFileSystem {
    /// The real file system as the storage engine holds it.
    pub fn shared() -> std::sync::Arc<dyn FileSystem> {
        std::sync::Arc::new(OsFileSystem)
    }
}

impl FileSystem for OsFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DataFile>> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::CreateNew => {
                opts.create_new(true);
            }
            OpenMode::OpenOrCreate => {
                opts.create(true);
            }
            OpenMode::Truncate => {
                opts.create(true).truncate(true);
            }
        }
        Ok(Box::new(OsFile(opts.open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }
}

/// A real open file.
#[derive(Debug)]
pub struct OsFile(pub File);

impl DataFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }

    #[cfg(any(feature = "client", feature = "server"))]
    fn read_exact_uninit_at(&self, buf: &mut [MaybeUninit<u8>], pos: u64) -> io::Result<()> {
        pread_exact_uninit(&self.0, buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn os_file(&self) -> &File {
        &self.0
    }
}

/// `pread(2)` until `buf` is full: `read_exact_at` for memory not initialised yet (std's
/// `read_buf_at` is unstable). Ok means every byte of `buf` was written. A read past the end of
/// the file is `UnexpectedEof`, as with `read_exact_at`.
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) fn pread_exact_uninit(
    file: &File,
    buf: &mut [MaybeUninit<u8>],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past off_t"))?;
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes (uninitialised memory may be
        // written); the kernel writes at most that many and returns how many it wrote.
        #[allow(unsafe_code)]
        let n = unsafe { libc::pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match n {
            n if n > 0 => {
                done += n as usize;
                offset += n as u64;
            }
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                ));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uninit_reads_fill_the_buffer_and_stop_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OsFileSystem;
        let f = fs.open(&dir.path().join("f"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"hello world", 0).unwrap();
        let mut buf = vec![MaybeUninit::new(0xAAu8); 5];
        f.read_exact_uninit_at(&mut buf, 6).unwrap();
        // SAFETY: the read returned Ok, so every byte was written (they started initialised
        // too, so this holds whatever the read did).
        #[allow(unsafe_code)]
        let got: Vec<u8> = buf.iter().map(|b| unsafe { b.assume_init() }).collect();
        assert_eq!(got, b"world");
        let mut past = vec![MaybeUninit::new(0u8); 6];
        let e = f.read_exact_uninit_at(&mut past, 6).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}

//! `FaultyFileSystem`: a [`FileSystem`] for tests that fails the Nth write or fsync and
//! simulates crashes, after TigerBeetle's storage simulator (`src/testing/storage.zig`).
//!
//! It works on the real files of a test's temporary directory (the indexes are memory-mapped,
//! so they need real files) and keeps beside them a *shadow* of what a power loss would leave,
//! modelled as a simple POSIX file system:
//!
//! - Each file is an inode with *durable contents*: the file's whole contents as of its last
//!   successful fsync (`sync_data`, `sync_all`, or a flushed memory map). Writes and `set_len`
//!   change only the real file until then.
//! - Names map to inodes twice: as the directory is now, and as it was at the directory's last
//!   fsync. Creating, renaming and removing change the first; [`FileSystem::sync_dir`] copies
//!   the first to the second for that directory.
//!
//! Faults, all counted from the file system's creation:
//! - [`fail_sync`](FaultyFileSystem::fail_sync): the Nth fsync (of a file, a map or a directory)
//!   returns `EIO` and makes nothing durable. As Linux does after a failed writeback, the
//!   file's unsynced changes are lost: its bytes go back to the durable contents (and zeros past
//!   them, keeping the length, so a memory map of it stays valid). Only that fsync fails: a
//!   retry would succeed — without the lost data — which is why a log must never retry one.
//! - [`fail_write`](FaultyFileSystem::fail_write): the Nth write returns `EIO` after its first
//!   `keep` bytes landed (a short write).
//! - [`crash_at`](FaultyFileSystem::crash_at): the process dies at the Nth *mutating operation*
//!   (creating a file, a write, `set_len`, an fsync, a rename, a remove): that operation does not
//!   happen — except that a write may land its first `keep` bytes (a torn write) — and every
//!   operation after it fails, as if nothing ran any more.
//!
//! After a crash, a test chooses what the disk holds:
//! - nothing more (a *process* crash, `kill -9`): the page cache survives, files stay as they
//!   are, torn write included;
//! - [`power_loss`](FaultyFileSystem::power_loss): every file goes back to its durable contents
//!   and every directory to its last fsynced entries.
//!
//! Then it opens the log again (with this file system after [`restart`](Self::restart), or
//! with the real one) and checks what recovery kept.
//!
//! Its fsyncs only take the snapshot; they do not call the OS (a simulated power loss needs no
//! real one, and hundreds of crash runs stay fast).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{DataFile, FileSystem, OpenMode, OsFile, OsFileSystem};

/// See the module docs.
#[derive(Debug, Default)]
pub struct FaultyFileSystem {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Mutating operations attempted so far (see the module docs).
    ops: u64,
    syncs: u64,
    writes: u64,
    fail_sync: Vec<u64>,
    /// (write number, bytes that land).
    fail_write: Vec<(u64, usize)>,
    /// The operation numbers that were writes (a dry run tells a test where to cut writes).
    write_ops: Vec<u64>,
    /// (operation number, bytes a write keeps).
    crash: Option<(u64, usize)>,
    crashed: bool,
    /// Durable contents per inode.
    inodes: Vec<Vec<u8>>,
    names: HashMap<PathBuf, usize>,
    durable_names: HashMap<PathBuf, usize>,
}

/// What an operation is, for counting and faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Write,
    Sync,
    Other,
}

/// What the plan says about one operation.
enum Verdict {
    Proceed,
    Fail(io::Error),
    /// A write fails after this many bytes landed.
    ShortWrite(usize),
    /// The process dies here; a write keeps this many bytes.
    Crash(usize),
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash: the process is gone")
}

/// EIO, with words saying it was injected (the log puts them in its offline reason).
fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure (EIO)"))
}

impl State {
    fn check_alive(&self) -> io::Result<()> {
        if self.crashed {
            return Err(crashed());
        }
        Ok(())
    }

    fn verdict(&mut self, op: Op) -> Verdict {
        if self.crashed {
            return Verdict::Fail(crashed());
        }
        let n = self.ops;
        self.ops += 1;
        if let Some((at, keep)) = self.crash
            && at == n
        {
            self.crashed = true;
            return Verdict::Crash(keep);
        }
        match op {
            Op::Sync => {
                let k = self.syncs;
                self.syncs += 1;
                if self.fail_sync.contains(&k) {
                    return Verdict::Fail(injected("fsync"));
                }
            }
            Op::Write => {
                let k = self.writes;
                self.writes += 1;
                self.write_ops.push(n);
                if let Some(&(_, keep)) = self.fail_write.iter().find(|(w, _)| *w == k) {
                    return Verdict::ShortWrite(keep);
                }
            }
            Op::Other => {}
        }
        Verdict::Proceed
    }

    /// [`verdict`](Self::verdict) for an operation that is not a write: Ok means do it.
    fn proceed(&mut self, op: Op) -> io::Result<()> {
        match self.verdict(op) {
            Verdict::Proceed => Ok(()),
            Verdict::Fail(e) => Err(e),
            Verdict::ShortWrite(_) | Verdict::Crash(_) => Err(crashed()),
        }
    }

    /// The inode named `path` now; a file the test file system has not seen yet (it existed
    /// before) becomes an inode whose durable contents are its current ones.
    fn inode_of(&mut self, path: &Path) -> io::Result<usize> {
        if let Some(&id) = self.names.get(path) {
            return Ok(id);
        }
        let contents = std::fs::read(path)?;
        let id = self.inodes.len();
        self.inodes.push(contents);
        self.names.insert(path.to_owned(), id);
        self.durable_names.insert(path.to_owned(), id);
        Ok(id)
    }
}

impl FaultyFileSystem {
    pub fn new() -> Arc<FaultyFileSystem> {
        Arc::new(FaultyFileSystem::default())
    }

    /// The `n`th fsync (counting from 0 at creation) fails with EIO; only that one.
    pub fn fail_sync(&self, n: u64) {
        self.state.lock().fail_sync.push(n);
    }

    /// The `n`th write (counting from 0 at creation) fails with EIO after its first `keep`
    /// bytes landed.
    pub fn fail_write(&self, n: u64, keep: usize) {
        self.state.lock().fail_write.push((n, keep));
    }

    /// The numbers of the mutating operations so far that were writes.
    pub fn write_ops(&self) -> Vec<u64> {
        self.state.lock().write_ops.clone()
    }

    /// The process dies at mutating operation `n` (counting from 0 at creation); if it is a
    /// write, its first `keep` bytes land.
    pub fn crash_at(&self, n: u64, keep: usize) {
        self.state.lock().crash = Some((n, keep));
    }

    /// Mutating operations attempted so far (a dry run's count bounds the crash points).
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// fsyncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    pub fn has_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Puts every file back to its durable contents and every directory to its last fsynced
    /// entries (see the module docs). Call after the log is dropped.
    pub fn power_loss(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        for path in s.names.keys() {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for (path, &id) in &s.durable_names {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, &s.inodes[id])?;
        }
        s.names = s.durable_names.clone();
        Ok(())
    }

    /// The process starts again: operations work, no fault is planned.
    pub fn restart(&self) {
        let mut s = self.state.lock();
        s.crashed = false;
        s.crash = None;
        s.fail_sync.clear();
        s.fail_write.clear();
    }
}

impl FileSystem for FaultyFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DataFile>> {
        let mut s = self.state.lock();
        s.check_alive()?;
        let exists = path.exists();
        let creates = match mode {
            OpenMode::Existing => false,
            OpenMode::CreateNew | OpenMode::Truncate => true,
            OpenMode::OpenOrCreate => !exists,
        };
        if creates {
            s.proceed(Op::Other)?;
        }
        let id = if exists && mode != OpenMode::CreateNew {
            Some(s.inode_of(path)?)
        } else {
            None
        };
        let file = OsFileSystem.open(path, mode)?;
        let id = match id {
            Some(id) => id,
            None => {
                let id = s.inodes.len();
                s.inodes.push(Vec::new());
                s.names.insert(path.to_owned(), id);
                id
            }
        };
        Ok(Box::new(FaultyFile {
            state: Arc::clone(&self.state),
            inode: id,
            file: OsFile(file.os_file().try_clone()?),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check_alive()?;
        let id = s.inode_of(from)?;
        if to.exists() {
            // A file replaced by the rename comes back after a power loss: know it first.
            s.inode_of(to)?;
        }
        s.proceed(Op::Other)?;
        std::fs::rename(from, to)?;
        s.names.remove(from);
        s.names.insert(to.to_owned(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check_alive()?;
        if path.exists() {
            // A removed file comes back after a power loss unless the removal was synced.
            s.inode_of(path)?;
        }
        s.proceed(Op::Other)?;
        std::fs::remove_file(path)?;
        s.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.proceed(Op::Sync)?;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        let State {
            names,
            durable_names,
            ..
        } = &mut *s;
        durable_names.retain(|p, _| !in_dir(p));
        for (p, &id) in names.iter().filter(|(p, _)| in_dir(p)) {
            durable_names.insert(p.clone(), id);
        }
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state.lock().check_alive()?;
        std::fs::create_dir_all(dir)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.proceed(Op::Other)?;
        std::fs::remove_dir_all(dir)?;
        // Treated as durable at once (directories are not modelled).
        s.names.retain(|p, _| !p.starts_with(dir));
        s.durable_names.retain(|p, _| !p.starts_with(dir));
        Ok(())
    }
}

/// A real file whose writes and fsyncs go through the plan and the shadow.
#[derive(Debug)]
struct FaultyFile {
    state: Arc<Mutex<State>>,
    inode: usize,
    file: OsFile,
}

impl FaultyFile {
    /// An fsync: on success the file's whole current contents become durable; on an injected
    /// failure its unsynced changes are lost (see the module docs) when `lose_pages`.
    fn sync(&self, lose_pages: bool) -> io::Result<()> {
        let mut s = self.state.lock();
        match s.verdict(Op::Sync) {
            Verdict::Proceed => {}
            Verdict::Fail(e) => {
                if lose_pages && !s.crashed {
                    let durable = &s.inodes[self.inode];
                    let len = self.file.file_len()?;
                    let keep = (durable.len() as u64).min(len);
                    self.file.write_all_at(&durable[..keep as usize], 0)?;
                    let zeros = vec![0u8; usize::try_from(len - keep).map_err(io::Error::other)?];
                    self.file.write_all_at(&zeros, keep)?;
                }
                return Err(e);
            }
            Verdict::ShortWrite(_) | Verdict::Crash(_) => return Err(crashed()),
        }
        let len = self.file.file_len()?;
        let mut contents = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut contents, 0)?;
        s.inodes[self.inode] = contents;
        Ok(())
    }
}

impl DataFile for FaultyFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.state.lock().check_alive()?;
        self.file.read_exact_at(buf, pos)
    }

    fn read_exact_uninit_at(&self, buf: &mut [MaybeUninit<u8>], pos: u64) -> io::Result<()> {
        self.state.lock().check_alive()?;
        self.file.read_exact_uninit_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        match s.verdict(Op::Write) {
            Verdict::Proceed => self.file.write_all_at(buf, pos),
            Verdict::Fail(e) => Err(e),
            Verdict::ShortWrite(keep) => {
                self.file.write_all_at(&buf[..keep.min(buf.len())], pos)?;
                Err(injected("write"))
            }
            Verdict::Crash(keep) => {
                self.file.write_all_at(&buf[..keep.min(buf.len())], pos)?;
                Err(crashed())
            }
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.lock().proceed(Op::Other)?;
        self.file.set_len(len)
    }

    fn file_len(&self) -> io::Result<u64> {
        self.state.lock().check_alive()?;
        self.file.file_len()
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(true)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(true)
    }

    fn os_file(&self) -> &File {
        &self.file.0
    }

    fn map_flushed(&self) -> io::Result<()> {
        // The map's pages are not touched: writing under a live map is allowed, but the index
        // code owns those bytes and a failed msync already takes the log offline.
        self.sync(false)
    }
}

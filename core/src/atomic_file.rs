//! Replacing a small file atomically: write a temporary file beside it, fsync it, rename it over
//! the target, fsync the directory. After a crash the file holds either the old or the new
//! contents, never a mix, and a completed replace survives power loss. Used for the embedded
//! registry's state, the consumer's local offset store and (through the log's
//! [`FileSystem`]) the partition checkpoint.

use std::path::Path;

use crate::error::{Error, Result};
use crate::file_io::{FileSystem, OpenMode, OsFileSystem};

/// Replaces `path` with `bytes` atomically and durably (see the module docs).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(&OsFileSystem, path, bytes)
}

/// [`write_atomically`] through `fs`.
pub fn write_atomically_with(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let f = fs
        .open(&tmp, OpenMode::Truncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    fs.rename(&tmp, path)
        .map_err(|e| Error::io("rename", path, e))?;
    sync_dir_with(fs, dir)
}

/// fsyncs a directory so that a rename or a new entry in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_dir_with(&OsFileSystem, dir)
}

/// [`sync_dir`] through `fs`.
pub fn sync_dir_with(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[cfg(feature = "server")]
    #[test]
    fn a_crash_at_any_step_leaves_the_old_or_the_new_contents() {
        use crate::file_io::faulty::FaultyFileSystem;
        // A dry run counts the steps (create, write, fsync, rename, fsync directory).
        let steps = {
            let dir = tempfile::tempdir().unwrap();
            let fs = FaultyFileSystem::new();
            write_atomically_with(&*fs, &dir.path().join("state"), b"new").unwrap();
            fs.ops()
        };
        assert_eq!(steps, 5);
        for at in 0..steps {
            for power_loss in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("state");
                let fs = FaultyFileSystem::new();
                std::fs::write(&p, b"old").unwrap();
                sync_dir(dir.path()).unwrap();
                fs.crash_at(at, 1);
                let e = write_atomically_with(&*fs, &p, b"new").unwrap_err();
                assert!(e.to_string().contains("simulated crash"), "{e}");
                if power_loss {
                    fs.power_loss().unwrap();
                }
                let got = std::fs::read(&p).unwrap();
                assert!(
                    got == b"old" || got == b"new",
                    "crash at step {at} (power loss {power_loss}) left {got:?}"
                );
                if power_loss {
                    // The directory fsync is the last step, so nothing new was durable yet.
                    assert_eq!(got, b"old", "crash at step {at}, then a power loss");
                }
            }
        }
    }
}

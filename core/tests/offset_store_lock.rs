//! The consumer's local offset store refuses a second process: this test binary is re-run as
//! the ignored test `child_opens_the_offset_store`, which opens the store the parent holds and
//! reports the outcome as its exit status.

use std::process::{Command, Stdio};

use sluiceway_core::Error;
use sluiceway_core::client::OffsetStore;

const CHILD_DIR: &str = "SLUICEWAY_CHILD_OFFSET_STORE_DIR";
const OPENED: i32 = 0;
const IN_USE: i32 = 3;
const OTHER_ERROR: i32 = 4;

/// Runs the child against `dir`; its exit code and what it printed.
fn open_in_another_process(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "offset_store_lock::child_opens_the_offset_store",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the child process");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("the child was killed: {:?}\n{stdout}", out.status));
    (code, stdout)
}

#[test]
fn a_second_process_is_refused_the_offset_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = OffsetStore::open(dir.path(), "g").unwrap();
    let (code, out) = open_in_another_process(dir.path());
    assert_eq!(
        code, IN_USE,
        "the child opened a store this process holds:\n{out}"
    );
    assert!(
        out.contains("in use by another consumer") && out.contains("g.offsets"),
        "{out}"
    );
    // Released on drop: now the other process may have it.
    drop(store);
    let (code, out) = open_in_another_process(dir.path());
    assert_eq!(code, OPENED, "{out}");
}

/// The child process of `a_second_process_is_refused_the_offset_store`; does nothing unless run
/// by it (ignored, and needs its environment variable).
#[test]
#[ignore = "run as a child process by a_second_process_is_refused_the_offset_store"]
fn child_opens_the_offset_store() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let code = match OffsetStore::open(dir.as_ref(), "g") {
        Ok(_) => OPENED,
        Err(e @ Error::InvalidConfig { .. }) => {
            println!("CHILD REFUSED {e}");
            IN_USE
        }
        Err(e) => {
            println!("CHILD FAILED {e}");
            OTHER_ERROR
        }
    };
    std::process::exit(code);
}

//! `sluiceway`: the broker and the command-line client. See [`sluiceway_broker::cli`].

fn main() -> std::process::ExitCode {
    tune_malloc();
    sluiceway_broker::cli::main()
}

/// Keeps freed message-set buffers in the process instead of returning them to the kernel
/// (see `MALLOC_MMAP_THRESHOLD_BYTES`). Only the binary does this: a library must not change
/// its host's allocator, so the language bindings leave it to their host process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    use sluiceway_core::limits::{MALLOC_MMAP_THRESHOLD_BYTES, MALLOC_TRIM_THRESHOLD_BYTES};
    // SAFETY: `mallopt` only sets allocator parameters; it is called first thing in `main`,
    // before any other thread exists. A refused value (return 0) leaves glibc's default,
    // which is correct, only slower.
    unsafe {
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            MALLOC_MMAP_THRESHOLD_BYTES as libc::c_int,
        );
        libc::mallopt(
            libc::M_TRIM_THRESHOLD,
            MALLOC_TRIM_THRESHOLD_BYTES as libc::c_int,
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

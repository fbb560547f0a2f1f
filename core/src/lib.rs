//! Sluiceway's core: everything that is not a socket or a language binding.
//!
//! - [`format`] — the on-disk and on-the-wire message format (magic 0/1 entries, compressed
//!   wrapper sets), encode, decode and validate. See `docs/FORMAT.md`.
//! - [`storage`] — the partition log: segments, sparse offset and time indexes, recovery,
//!   retention, flush policy with group commit.
//! - [`limits`] — every bound in one place, with compile-time checks of how they relate.
//! - [`error`] — the internal [`Error`] and the stable wire [`ErrorCode`].
//! - [`types`] — newtypes for kinds of integers (`Offset`, `RelativeOffset`, `FilePosition`).

pub mod error;
pub mod format;
pub mod limits;
pub mod storage;
pub mod types;

pub use error::{Error, ErrorCode, Result};
pub use types::{FilePosition, Offset, RelativeOffset, TimestampMs};

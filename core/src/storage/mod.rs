//! The partition log: one directory per partition holding a sequence of segments, each a
//! `.log` file of entries in the notes' format plus two derived, memory-mapped indexes.
//!
//! - [`PartitionLog`] (`log.rs`) — the public face: append, read, seek by time, retention,
//!   flush policy with group commit, checkpoints, clean shutdown.
//! - `segment.rs` — one segment: its `.log` file and its indexes.
//! - `offset_index.rs`, `time_index.rs` — Kafka's sparse `.index` and `.timeindex`.
//! - `recovery.rs` — what `open` does when the log was not shut down cleanly, and the rule that
//!   tells a torn tail (truncated) from damage followed by valid data (`Error::CorruptSegment`).
//! - `checkpoint.rs` — the per-partition checkpoint file and the clean-shutdown marker.
//! - [`LogConfig`] (`config.rs`) and [`Clock`] (`clock.rs`).
//!
//! Every file operation goes through the file seam, [`crate::file_io`]: the real file system by
//! default, a fault-injecting one in tests ([`PartitionLog::open_with_file_system`]).
//!
//! File names inside a partition directory (a compatibility surface: only ever added to):
//! `{base_offset:020}.log`, `{base_offset:020}.index`, `{base_offset:020}.timeindex`,
//! `checkpoint` (and `checkpoint.tmp` while it is replaced), `clean-shutdown`.

mod checkpoint;
mod clock;
mod config;
mod log;
mod offset_index;
pub mod producer_state;
mod recovery;
mod segment;
mod time_index;

pub use crate::format::TimestampType;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FlushPolicy, LogConfig};
pub use log::{AppendInfo, PartitionLog, ReadResult};

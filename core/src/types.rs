//! Newtypes for the kinds of integers the log deals in, so that an offset is never added to a
//! file position by accident. Conversions are explicit and checked.

use std::fmt;

/// A message's position in its partition: assigned by the leader, dense and increasing.
/// Kafka's offsets are signed 64-bit on the wire; ours never exceed [`Offset::MAX`] so they stay
/// representable there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Offset {
    /// Largest offset a log may assign (`i64::MAX`, Kafka's bound).
    pub const MAX: Offset = Offset(i64::MAX as u64);

    /// The offset relative to a segment's base offset, when it fits a `u32` (index entries).
    pub fn relative_to(self, base: Offset) -> Option<RelativeOffset> {
        let delta = self.0.checked_sub(base.0)?;
        u32::try_from(delta).ok().map(RelativeOffset)
    }

    pub fn checked_add(self, n: u64) -> Option<Offset> {
        self.0
            .checked_add(n)
            .filter(|o| *o <= Offset::MAX.0)
            .map(Offset)
    }

    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An offset minus its segment's base offset, as stored in `.index` and `.timeindex` entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelativeOffset(pub u32);

impl RelativeOffset {
    pub fn absolute(self, base: Offset) -> Offset {
        Offset(base.0 + u64::from(self.0))
    }
}

/// A byte position inside one segment's `.log` file. Segments stay below 4 GiB
/// (see `limits::SEGMENT_BYTES_MAX`), so a `u32` holds every position, as in Kafka's index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePosition(pub u32);

impl fmt::Display for FilePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch. `-1` means "no timestamp" (magic 0 messages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    pub const NONE: TimestampMs = TimestampMs(-1);
}

//! The message format: the notes' entry layout, byte for byte. `docs/FORMAT.md` is the
//! specification with golden vectors; this module is its one implementation.
//!
//! ```text
//! entry   = offset i64 · size i32 · message(size bytes)
//! message = crc u32 · magic i8 · attributes i8 · [timestamp i64 if magic ≥ 1]
//!           · key_length i32 (-1 = null) · key · value_length i32 (-1 = null) · value
//! ```
//! Big-endian throughout. The CRC-32 (IEEE) covers everything after itself (magic to the end of
//! the value) and not the offset, so assigning offsets never recomputes a CRC. The magic byte is
//! always at byte 16 of an entry.
//!
//! A *compressed set* is one wrapper entry (attributes' codec ≠ 0, null key) whose value is the
//! compressed bytes of inner entries. Inner entries have the wrapper's magic, no compression, and
//! relative offsets 0, 1, …, n−1; the wrapper's offset is the absolute offset of its last inner
//! message (Kafka's v1 rule), so inner absolute offset = wrapper offset − (n−1) + relative.
//!
//! Invariants: decoding never panics and never allocates more than the named limits allow, on
//! any input; every length is checked against the bytes present first. The magic byte is checked
//! before the CRC, because where the CRC sits depends on the magic (magic 2 keeps its CRC at byte
//! 17), so a magic-2 batch is reported as an unknown magic rather than as a CRC mismatch.

pub mod compression;

use crate::error::{Error, Result};
use crate::limits::{
    LOG_OVERHEAD_BYTES, MESSAGE_BYTES_MAX, MESSAGE_V0_HEADER_BYTES, MESSAGE_V1_HEADER_BYTES,
    WRAPPER_MESSAGES_MAX,
};
use crate::types::{Offset, TimestampMs};
pub use compression::Compression;

pub const MAGIC_V0: u8 = 0;
pub const MAGIC_V1: u8 = 1;
/// Kafka's RecordBatch v2; reserved here, not yet accepted.
pub const MAGIC_V2: u8 = 2;

/// Byte positions within an entry.
pub const OFFSET_POS: usize = 0;
pub const SIZE_POS: usize = 8;
pub const CRC_POS: usize = 12;
pub const MAGIC_POS: usize = 16;
pub const ATTRIBUTES_POS: usize = 17;
pub const TIMESTAMP_POS: usize = 18;

const COMPRESSION_MASK: u8 = 0x07;
const TIMESTAMP_TYPE_BIT: u8 = 0x08;
const RESERVED_BITS: u8 = 0xF0;

/// Attributes bit 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

impl TimestampType {
    /// Kafka's `message.timestamp.type` values.
    pub fn name(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }

    pub fn from_name(name: &str) -> Option<TimestampType> {
        match name {
            "CreateTime" => Some(TimestampType::CreateTime),
            "LogAppendTime" => Some(TimestampType::LogAppendTime),
            _ => None,
        }
    }
}

/// The attributes byte, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Attributes {
    pub compression: Compression,
    pub timestamp_type: TimestampType,
}

impl Attributes {
    pub fn to_byte(self) -> u8 {
        let ts = match self.timestamp_type {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => TIMESTAMP_TYPE_BIT,
        };
        self.compression.code() | ts
    }

    pub fn from_byte(b: u8) -> Result<Attributes> {
        if b & RESERVED_BITS != 0 {
            return Err(Error::corrupt(
                0,
                format!("reserved attribute bits set: {b:#04x}"),
            ));
        }
        Ok(Attributes {
            compression: Compression::from_code(b & COMPRESSION_MASK)?,
            timestamp_type: if b & TIMESTAMP_TYPE_BIT != 0 {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
        })
    }
}

/// Bytes one message takes (without the 12-byte log overhead).
pub fn message_size(magic: u8, key: Option<&[u8]>, value: Option<&[u8]>) -> usize {
    let header = if magic == MAGIC_V0 {
        MESSAGE_V0_HEADER_BYTES
    } else {
        MESSAGE_V1_HEADER_BYTES
    };
    header as usize + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)
}

/// Appends one entry to `out`: offset, size, CRC and message. The caller bounds key and value
/// (producers check sizes against the limits before building a set): a message larger than
/// `i32::MAX` bytes cannot be framed at all.
pub fn write_entry(
    out: &mut Vec<u8>,
    offset: u64,
    magic: u8,
    attributes: u8,
    timestamp: TimestampMs,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let size = message_size(magic, key, value);
    debug_assert!(
        i32::try_from(size).is_ok(),
        "a message of {size} bytes cannot be framed"
    );
    out.reserve(LOG_OVERHEAD_BYTES as usize + size);
    let start = out.len();
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled below
    out.push(magic);
    out.push(attributes);
    if magic >= MAGIC_V1 {
        out.extend_from_slice(&timestamp.0.to_be_bytes());
    }
    for field in [key, value] {
        match field {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    let crc = crc32fast::hash(&out[start + MAGIC_POS..]);
    out[start + CRC_POS..start + MAGIC_POS].copy_from_slice(&crc.to_be_bytes());
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// One entry of a set, borrowed from the buffer it was read from. Created only by
/// [`Entries`], which has checked its framing (not its CRC: see [`Entry::check_crc`]).
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// Byte position of the entry in the buffer being iterated.
    pub position: usize,
    /// The whole entry, including the 12-byte log overhead.
    pub bytes: &'a [u8],
}

impl<'a> Entry<'a> {
    pub fn offset(&self) -> Offset {
        Offset(be_u64(self.bytes, OFFSET_POS))
    }

    pub fn stored_crc(&self) -> u32 {
        be_u32(self.bytes, CRC_POS)
    }

    pub fn computed_crc(&self) -> u32 {
        crc32fast::hash(&self.bytes[MAGIC_POS..])
    }

    pub fn check_crc(&self) -> Result<()> {
        let (stored, computed) = (self.stored_crc(), self.computed_crc());
        if stored != computed {
            return Err(Error::corrupt(
                self.position,
                format!("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        Ok(())
    }

    pub fn magic(&self) -> u8 {
        self.bytes[MAGIC_POS]
    }

    pub fn attributes_byte(&self) -> u8 {
        self.bytes[ATTRIBUTES_POS]
    }

    /// Total bytes, log overhead included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Decodes the message fields; checks lengths, magic and attributes (not the CRC).
    pub fn message(&self) -> Result<Message<'a>> {
        Message::parse(self.bytes, self.position)
    }
}

/// A decoded message, borrowing key and value from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub offset: Offset,
    pub magic: u8,
    pub attributes: Attributes,
    /// [`TimestampMs::NONE`] for magic 0.
    pub timestamp: TimestampMs,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl<'a> Message<'a> {
    /// Parses an entry whose framing (offset, size) has been checked. `position` is for errors.
    fn parse(entry: &'a [u8], position: usize) -> Result<Message<'a>> {
        let err = |reason: String| Error::corrupt(position, reason);
        // [`Entries`] guarantees this; checked again because `Entry`'s fields are public.
        if entry.len() < (LOG_OVERHEAD_BYTES + MESSAGE_V0_HEADER_BYTES) as usize {
            return Err(err(format!(
                "entry of {} bytes is shorter than the smallest entry",
                entry.len()
            )));
        }
        let magic = entry[MAGIC_POS];
        let header = match magic {
            MAGIC_V0 => MESSAGE_V0_HEADER_BYTES,
            MAGIC_V1 => MESSAGE_V1_HEADER_BYTES,
            m => {
                return Err(err(format!(
                    "unknown magic {m} (this reader handles 0 and 1)"
                )));
            }
        } as usize;
        let size = entry.len() - LOG_OVERHEAD_BYTES as usize;
        if size < header {
            return Err(err(format!(
                "message of {size} bytes is shorter than the {header}-byte header of magic {magic}"
            )));
        }
        let attributes = Attributes::from_byte(entry[ATTRIBUTES_POS]).map_err(|e| match e {
            Error::CorruptMessage { reason, .. } => err(reason),
            other => other,
        })?;
        let (timestamp, mut at) = if magic == MAGIC_V0 {
            (TimestampMs::NONE, TIMESTAMP_POS)
        } else {
            (
                TimestampMs(be_u64(entry, TIMESTAMP_POS) as i64),
                TIMESTAMP_POS + 8,
            )
        };
        let mut field = |name: &str| -> Result<Option<&'a [u8]>> {
            if entry.len() - at < 4 {
                return Err(err(format!(
                    "{name} length runs past the end of the message"
                )));
            }
            let len = be_u32(entry, at) as i32;
            at += 4;
            if len == -1 {
                return Ok(None);
            }
            if len < 0 {
                return Err(err(format!("{name} length {len} is negative")));
            }
            let len = len as usize;
            if len > entry.len() - at {
                return Err(err(format!(
                    "{name} length {len} runs past the end of the message ({} bytes left)",
                    entry.len() - at
                )));
            }
            let bytes = &entry[at..at + len];
            at += len;
            Ok(Some(bytes))
        };
        let key = field("key")?;
        let value = field("value")?;
        if at != entry.len() {
            return Err(err(format!(
                "{} trailing bytes after the value",
                entry.len() - at
            )));
        }
        Ok(Message {
            offset: Offset(be_u64(entry, OFFSET_POS)),
            magic,
            attributes,
            timestamp,
            key,
            value,
        })
    }
}

/// Shallow iteration over the entries of a buffer. Checks framing only: that 12 bytes of
/// overhead are there, that `size` is within [`MESSAGE_BYTES_MAX`] and at least a v0 header, and
/// that `size` bytes follow. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> Entries<'a> {
    pub fn new(buf: &'a [u8]) -> Entries<'a> {
        Entries {
            buf,
            position: 0,
            failed: false,
        }
    }

    /// Byte position of the next entry (after iteration: the end of the last good entry).
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position == self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.position..];
        let fail = |this: &mut Self, reason: String| {
            this.failed = true;
            Some(Err(Error::corrupt(this.position, reason)))
        };
        if rest.len() < LOG_OVERHEAD_BYTES as usize {
            return fail(
                self,
                format!(
                    "{} bytes left, fewer than the 12-byte entry header",
                    rest.len()
                ),
            );
        }
        let size = be_u32(rest, SIZE_POS) as i32;
        if size < MESSAGE_V0_HEADER_BYTES as i32 {
            return fail(
                self,
                format!(
                    "entry size {size} is smaller than the smallest message ({MESSAGE_V0_HEADER_BYTES} bytes)"
                ),
            );
        }
        if size as u32 > MESSAGE_BYTES_MAX {
            return fail(
                self,
                format!("entry size {size} exceeds the limit of {MESSAGE_BYTES_MAX} bytes"),
            );
        }
        let total = LOG_OVERHEAD_BYTES as usize + size as usize;
        if total > rest.len() {
            return fail(
                self,
                format!(
                    "entry of {total} bytes runs past the end of the set ({} bytes left)",
                    rest.len()
                ),
            );
        }
        let entry = Entry {
            position: self.position,
            bytes: &rest[..total],
        };
        self.position += total;
        Some(Ok(entry))
    }
}

/// What [`prepare_append`] learned about a producer's set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetSummary {
    /// Offsets the set occupies (inner messages of wrappers each count).
    pub message_count: u64,
    /// Shallow entries (a wrapper counts once).
    pub entry_count: u32,
    /// Offset assigned to the first message.
    pub base_offset: Offset,
    /// Offset assigned to the last message.
    pub last_offset: Offset,
    /// Largest timestamp in the set, and the offset of the shallow entry carrying it.
    pub max_timestamp: TimestampMs,
    pub offset_of_max_timestamp: Offset,
    /// Magic of the set's entries (all must match).
    pub magic: u8,
}

/// Options for validating a producer's set.
#[derive(Clone, Copy, Debug)]
pub struct AppendOptions {
    /// Topic's `max.message.bytes`: the largest shallow message accepted.
    pub max_message_bytes: u32,
    /// When `LogAppendTime`, timestamps are overwritten with `now` and CRCs recomputed.
    pub timestamp_type: TimestampType,
    pub now: TimestampMs,
}

/// Validates a producer's message set and assigns offsets from `base`, in place.
///
/// Checks every entry's framing, magic and CRC; for a wrapper, decompresses it (bounded) and
/// checks the inner entries: same magic, no nested compression, relative offsets 0..n, valid
/// CRCs. Producers never set the log-append-time bit (attributes bit 3): the broker does, so a
/// set carrying it is refused with [`Error::InvalidTimestamp`] (Kafka's rule).
///
/// Normally only the 8-byte offset fields are rewritten (the CRC does not cover them). The CRC
/// of a magic-1 shallow entry is recomputed in two cases: the topic uses `LogAppendTime` (the
/// timestamp becomes `now` and bit 3 is set), or a wrapper's timestamp is not the largest
/// timestamp of its inner messages (it is corrected to that, as Kafka does, so the time index
/// can trust it). On error the set must be discarded whole: it may be partly rewritten.
pub fn prepare_append(
    set: &mut [u8],
    base: Offset,
    opts: &AppendOptions,
    scratch: &mut Vec<u8>,
) -> Result<SetSummary> {
    if set.is_empty() {
        return Err(Error::InvalidRequest("empty message set".into()));
    }
    let mut next = base;
    let mut entry_count = 0u32;
    let mut magic = None;
    let mut max_ts = TimestampMs::NONE;
    let mut offset_of_max = base;
    let mut position = 0usize;
    while position < set.len() {
        let checked = check_producer_entry(set, position, opts, scratch)?;
        if let Some(m) = magic
            && m != checked.magic
        {
            return Err(Error::corrupt(
                position,
                format!("mixed magic in one set: {m} then {}", checked.magic),
            ));
        }
        magic = Some(checked.magic);
        let last = next.checked_add(checked.count - 1).ok_or_else(|| {
            Error::InvalidRequest("offsets would exceed the largest offset".into())
        })?;
        let entry = &mut set[position..position + checked.len];
        entry[OFFSET_POS..SIZE_POS].copy_from_slice(&last.0.to_be_bytes());
        let ts = if checked.magic == MAGIC_V0 {
            TimestampMs::NONE
        } else {
            let ts = match opts.timestamp_type {
                TimestampType::LogAppendTime => {
                    entry[ATTRIBUTES_POS] |= TIMESTAMP_TYPE_BIT;
                    opts.now
                }
                TimestampType::CreateTime => checked.timestamp,
            };
            if ts != checked.stored_timestamp || opts.timestamp_type == TimestampType::LogAppendTime
            {
                entry[TIMESTAMP_POS..TIMESTAMP_POS + 8].copy_from_slice(&ts.0.to_be_bytes());
                let crc = crc32fast::hash(&entry[MAGIC_POS..]);
                entry[CRC_POS..MAGIC_POS].copy_from_slice(&crc.to_be_bytes());
            }
            ts
        };
        if ts > max_ts || entry_count == 0 {
            max_ts = ts;
            offset_of_max = last;
        }
        next = last.next();
        entry_count += 1;
        position += checked.len;
    }
    Ok(SetSummary {
        message_count: next.0 - base.0,
        entry_count,
        base_offset: base,
        last_offset: Offset(next.0 - 1),
        max_timestamp: max_ts,
        offset_of_max_timestamp: offset_of_max,
        magic: magic.unwrap_or(MAGIC_V0),
    })
}

/// What [`check_producer_entry`] learned about one shallow entry.
struct CheckedEntry {
    /// Bytes of the entry, log overhead included.
    len: usize,
    /// Offsets it occupies.
    count: u64,
    magic: u8,
    /// Its create time: its own timestamp, or for a wrapper the largest inner timestamp.
    timestamp: TimestampMs,
    /// The timestamp field as the producer wrote it.
    stored_timestamp: TimestampMs,
}

/// Validates the shallow entry at `position` of a producer's set. Error positions are absolute.
fn check_producer_entry(
    set: &[u8],
    position: usize,
    opts: &AppendOptions,
    scratch: &mut Vec<u8>,
) -> Result<CheckedEntry> {
    let at = |e: Error| shift(e, position);
    let entry = match Entries::new(&set[position..]).next() {
        Some(entry) => entry.map_err(at)?,
        None => return Err(Error::corrupt(position, "no entry where one was expected")),
    };
    check_magic(&entry).map_err(at)?;
    let msg_size = entry.len() as u64 - u64::from(LOG_OVERHEAD_BYTES);
    if msg_size > u64::from(opts.max_message_bytes) {
        return Err(Error::MessageTooLarge {
            size: msg_size,
            max: u64::from(opts.max_message_bytes),
        });
    }
    entry.check_crc().map_err(at)?;
    let msg = entry.message().map_err(at)?;
    if msg.attributes.timestamp_type == TimestampType::LogAppendTime {
        return Err(log_append_time_from_producer(position));
    }
    let (count, timestamp) = if msg.attributes.compression == Compression::None {
        (1, msg.timestamp)
    } else {
        if msg.key.is_some() {
            return Err(Error::corrupt(
                position,
                "a compressed wrapper must have a null key",
            ));
        }
        let Some(value) = msg.value else {
            return Err(Error::corrupt(
                position,
                "a compressed wrapper has a null value",
            ));
        };
        let inner = decompress_and_check(msg.attributes.compression, msg.magic, value, scratch)
            .map_err(at)?;
        if inner.log_append_time {
            return Err(log_append_time_from_producer(position));
        }
        (inner.count, inner.max_timestamp)
    };
    Ok(CheckedEntry {
        len: entry.len(),
        count,
        magic: msg.magic,
        timestamp,
        stored_timestamp: msg.timestamp,
    })
}

fn log_append_time_from_producer(position: usize) -> Error {
    Error::InvalidTimestamp(format!(
        "message at byte {position} of the set has the log-append-time bit set; only the broker sets it"
    ))
}

/// Moves a [`Error::CorruptMessage`] position by `by` bytes (from an entry to its set).
fn shift(e: Error, by: usize) -> Error {
    match e {
        Error::CorruptMessage { position, reason } => Error::corrupt(by + position, reason),
        other => other,
    }
}

/// Refuses magics this reader does not handle. Called before the CRC is checked, because the
/// CRC's place depends on the magic.
fn check_magic(entry: &Entry<'_>) -> Result<()> {
    match entry.magic() {
        MAGIC_V0 | MAGIC_V1 => Ok(()),
        MAGIC_V2 => Err(Error::corrupt(
            entry.position,
            "unknown magic 2 (reserved for Kafka's RecordBatch v2; this reader handles 0 and 1)",
        )),
        m => Err(Error::corrupt(
            entry.position,
            format!("unknown magic {m} (this reader handles 0 and 1)"),
        )),
    }
}

/// What a wrapper's inner entries hold.
struct InnerSummary {
    count: u64,
    max_timestamp: TimestampMs,
    /// Whether any inner entry has the log-append-time bit (producers must not set it).
    log_append_time: bool,
}

/// Decompresses a wrapper's value into `scratch` and checks its inner entries. Errors carry
/// position 0 (the wrapper) and name the inner byte in their reason.
fn decompress_and_check(
    codec: Compression,
    magic: u8,
    value: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<InnerSummary> {
    compression::decompress(codec, value, scratch)?;
    let mut summary = InnerSummary {
        count: 0,
        max_timestamp: TimestampMs::NONE,
        log_append_time: false,
    };
    for inner in Entries::new(scratch) {
        let inner = inner.map_err(inner_error)?;
        let inner_at = |reason: String| {
            Error::corrupt(
                0,
                format!(
                    "in compressed payload at inner byte {}: {reason}",
                    inner.position
                ),
            )
        };
        if inner.magic() != magic {
            return Err(inner_at(format!(
                "inner message has magic {} inside a magic {magic} wrapper",
                inner.magic()
            )));
        }
        inner.check_crc().map_err(inner_error)?;
        let m = inner.message().map_err(inner_error)?;
        if m.attributes.compression != Compression::None {
            return Err(inner_at("nested compression inside a wrapper".into()));
        }
        if m.offset.0 != summary.count {
            return Err(inner_at(format!(
                "inner relative offset {} where {} was expected",
                m.offset.0, summary.count
            )));
        }
        summary.count += 1;
        if summary.count > u64::from(WRAPPER_MESSAGES_MAX) {
            return Err(Error::corrupt(
                0,
                format!("wrapper holds more than {WRAPPER_MESSAGES_MAX} messages"),
            ));
        }
        summary.max_timestamp = summary.max_timestamp.max(m.timestamp);
        summary.log_append_time |= m.attributes.timestamp_type == TimestampType::LogAppendTime;
    }
    if summary.count == 0 {
        return Err(Error::corrupt(0, "compressed wrapper holds no messages"));
    }
    Ok(summary)
}

fn inner_error(e: Error) -> Error {
    match e {
        Error::CorruptMessage { position, reason } => Error::corrupt(
            0,
            format!("in compressed payload at inner byte {position}: {reason}"),
        ),
        other => other,
    }
}

/// One logical message of a set, after unwrapping compression, with its absolute offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: Offset,
    pub timestamp: TimestampMs,
    pub timestamp_type: TimestampType,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Visits every logical message of a set in offset order, decompressing wrappers into
/// `scratch`. Every CRC is checked. Used by consumers and by tests; the broker never calls it on
/// the fetch path. Stops at the first error.
pub fn for_each_record(
    set: &[u8],
    scratch: &mut Vec<u8>,
    mut f: impl FnMut(Record<'_>),
) -> Result<()> {
    for entry in Entries::new(set) {
        let entry = entry?;
        check_magic(&entry)?;
        entry.check_crc()?;
        let msg = entry.message()?;
        match msg.attributes.compression {
            Compression::None => f(Record {
                offset: msg.offset,
                timestamp: msg.timestamp,
                timestamp_type: msg.attributes.timestamp_type,
                key: msg.key,
                value: msg.value,
            }),
            codec => {
                let value = msg.value.ok_or_else(|| {
                    Error::corrupt(entry.position, "compressed wrapper has a null value")
                })?;
                let count = decompress_and_check(codec, msg.magic, value, scratch)
                    .map_err(|e| shift(e, entry.position))?
                    .count;
                let first = msg.offset.0.checked_sub(count - 1).ok_or_else(|| {
                    Error::corrupt(
                        entry.position,
                        "wrapper offset is smaller than its message count",
                    )
                })?;
                for inner in Entries::new(scratch) {
                    // Checked by `decompress_and_check`; the `?` cannot fire.
                    let m = inner?.message()?;
                    // Log-append time on the wrapper applies to every inner message (Kafka's rule).
                    let (timestamp, timestamp_type) = match msg.attributes.timestamp_type {
                        TimestampType::LogAppendTime => {
                            (msg.timestamp, TimestampType::LogAppendTime)
                        }
                        TimestampType::CreateTime => (m.timestamp, TimestampType::CreateTime),
                    };
                    f(Record {
                        offset: Offset(first + m.offset.0),
                        timestamp,
                        timestamp_type,
                        key: m.key,
                        value: m.value,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Builds a producer's message set: uncompressed entries with offsets 0..n, or one compressed
/// wrapper holding them. The broker assigns the real offsets.
#[derive(Debug)]
pub struct MessageSetBuilder {
    magic: u8,
    compression: Compression,
    buf: Vec<u8>,
    count: u64,
    max_timestamp: TimestampMs,
}

impl MessageSetBuilder {
    pub fn new(magic: u8, compression: Compression) -> MessageSetBuilder {
        assert!(
            magic <= MAGIC_V1,
            "magic {magic} is not a message-set magic"
        );
        MessageSetBuilder {
            magic,
            compression,
            buf: Vec::new(),
            count: 0,
            max_timestamp: TimestampMs::NONE,
        }
    }

    pub fn with_capacity(magic: u8, compression: Compression, bytes: usize) -> MessageSetBuilder {
        let mut b = MessageSetBuilder::new(magic, compression);
        b.buf.reserve(bytes);
        b
    }

    pub fn push(&mut self, timestamp: TimestampMs, key: Option<&[u8]>, value: Option<&[u8]>) {
        let ts = if self.magic == MAGIC_V0 {
            TimestampMs::NONE
        } else {
            timestamp
        };
        write_entry(&mut self.buf, self.count, self.magic, 0, ts, key, value);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(ts);
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes written so far (uncompressed).
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        if self.compression == Compression::None || self.count == 0 {
            return Ok(self.buf);
        }
        let mut compressed = Vec::with_capacity(self.buf.len() / 2 + 64);
        compression::compress(self.compression, &self.buf, &mut compressed)?;
        let mut out = Vec::with_capacity(compressed.len() + 64);
        let attrs = Attributes {
            compression: self.compression,
            timestamp_type: TimestampType::CreateTime,
        };
        write_entry(
            &mut out,
            self.count - 1,
            self.magic,
            attrs.to_byte(),
            self.max_timestamp,
            None,
            Some(&compressed),
        );
        Ok(out)
    }
}

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
//! Magic 2 entries are Kafka's RecordBatch v2 ([`v2`]). A reader dispatches on byte 16: the
//! framing (offset · size) is the same for every magic (a v2 batch's `batchLength` is its
//! `size`), but the CRC's place and polynomial, the meaning of the offset field and where the
//! timestamp sits differ. [`Entry`]'s methods ([`Entry::check_crc`], [`Entry::last_offset`],
//! [`Entry::info`]) dispatch, so storage code reads every magic through them. One difference
//! matters everywhere offsets are compared: a v1 wrapper's offset field is its *last* offset,
//! a v2 batch's is its *first* (baseOffset); [`Entry::last_offset`] gives the last for both.
//!
//! Invariants: decoding never panics and never allocates more than the named limits allow, on
//! any input; every length is checked against the bytes present first. The magic byte is checked
//! before the CRC, because where the CRC sits depends on the magic (magic 2 keeps its CRC-32C at
//! byte 17).

pub mod compression;
pub mod v2;

use crate::error::{Error, Result};
use crate::limits::{
    LOG_OVERHEAD_BYTES, MESSAGE_BYTES_MAX, MESSAGE_V0_HEADER_BYTES, MESSAGE_V1_HEADER_BYTES,
    RECORD_BATCH_HEADER_BYTES, WRAPPER_MESSAGES_MAX,
};
use crate::types::{Offset, TimestampMs};
pub use compression::Compression;
pub use v2::{BatchHeader, Header, Headers, RecordBatchBuilder};

pub const MAGIC_V0: u8 = 0;
pub const MAGIC_V1: u8 = 1;
/// Kafka's RecordBatch v2 (see [`v2`]).
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

    /// The CRC field: CRC-32 at byte 12 for magic 0/1, CRC-32C at byte 17 for magic 2.
    pub fn stored_crc(&self) -> u32 {
        if self.magic() == MAGIC_V2 {
            be_u32(self.bytes, v2::CRC_POS)
        } else {
            be_u32(self.bytes, CRC_POS)
        }
    }

    pub fn computed_crc(&self) -> u32 {
        if self.magic() == MAGIC_V2 {
            v2::compute_crc(self.bytes)
        } else {
            crc32fast::hash(&self.bytes[MAGIC_POS..])
        }
    }

    /// The offset of the entry's last message: the offset field for magic 0/1 (a wrapper
    /// carries its last inner offset), baseOffset + lastOffsetDelta for magic 2. [`Entries`]
    /// guarantees a magic 2 entry has its whole header; bytes shorter than that (a header being
    /// read) give the offset field, and need only its 12 bytes.
    pub fn last_offset(&self) -> Offset {
        if self.bytes.len() >= v2::RECORDS_POS && self.bytes[MAGIC_POS] == MAGIC_V2 {
            let delta = be_u32(self.bytes, v2::LAST_OFFSET_DELTA_POS) as i32;
            Offset(self.offset().0.saturating_add(delta.max(0) as u64))
        } else {
            self.offset()
        }
    }

    /// The shallow facts storage needs, for every magic: layout checked (for magic 0/1 the
    /// whole message, for magic 2 the header), not the CRC and not a v2 batch's records.
    pub fn info(&self) -> Result<EntryInfo> {
        if self.magic() == MAGIC_V2 {
            let h = v2::BatchHeader::parse(self.bytes).map_err(|e| shift(e, self.position))?;
            return Ok(EntryInfo {
                magic: MAGIC_V2,
                compression: h.attributes.compression,
                timestamp_type: h.attributes.timestamp_type,
                timestamp: h.max_timestamp,
                first_offset: Some(h.base_offset),
                last_offset: h.last_offset(),
            });
        }
        let m = self.message()?;
        Ok(EntryInfo {
            magic: m.magic,
            compression: m.attributes.compression,
            timestamp_type: m.attributes.timestamp_type,
            timestamp: m.timestamp,
            first_offset: (m.attributes.compression == Compression::None).then_some(m.offset),
            last_offset: m.offset,
        })
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

/// What [`Entry::info`] reads from an entry of any magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub magic: u8,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    /// The entry's timestamp as indexes use it: a magic 0/1 message's own (for a wrapper, the
    /// largest inner one), a magic 2 batch's maxTimestamp. `TimestampMs::NONE` for magic 0.
    pub timestamp: TimestampMs,
    /// Offset of its first message, when known without decompressing (not for a v1 wrapper).
    pub first_offset: Option<Offset>,
    pub last_offset: Offset,
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

/// The offset of the last message of a set's last entry (see [`Entry::last_offset`]) from its
/// framing alone, `None` for an empty set. Framing errors are CORRUPT_MESSAGE; CRCs are not
/// checked.
pub fn last_offset_of(set: &[u8]) -> Result<Option<Offset>> {
    let mut last = None;
    for entry in Entries::new(set) {
        last = Some(entry?.last_offset());
    }
    Ok(last)
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
        // A magic 2 batch has a 61-byte header; a shorter one cannot be read further.
        let v2_min = (RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
        if rest.len() > MAGIC_POS && rest[MAGIC_POS] == MAGIC_V2 && size < v2_min {
            return fail(
                self,
                format!("magic 2 batch size {size} is smaller than its header ({v2_min} bytes)"),
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
    /// The leader's epoch, written into every magic 2 batch's partitionLeaderEpoch (a field the
    /// CRC does not cover). Magic 0/1 entries have no such field.
    pub leader_epoch: i32,
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
        if set.get(position + MAGIC_POS) == Some(&MAGIC_V2) {
            let len = framed_len(set, position)?;
            if let Some(m) = magic
                && m != MAGIC_V2
            {
                return Err(Error::corrupt(
                    position,
                    format!("mixed magic in one set: {m} then {MAGIC_V2}"),
                ));
            }
            magic = Some(MAGIC_V2);
            let entry = &mut set[position..position + len];
            let (count, ts) =
                prepare_batch(entry, next, opts, scratch).map_err(|e| shift(e, position))?;
            let last = next.checked_add(u64::from(count) - 1).ok_or_else(|| {
                Error::InvalidRequest("offsets would exceed the largest offset".into())
            })?;
            if ts > max_ts || entry_count == 0 {
                max_ts = ts;
                offset_of_max = last;
            }
            next = last.next();
            entry_count += 1;
            position += len;
            continue;
        }
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

/// Bytes of the entry at `position` of a producer's set, framing checked.
fn framed_len(set: &[u8], position: usize) -> Result<usize> {
    match Entries::new(&set[position..]).next() {
        Some(entry) => Ok(entry.map_err(|e| shift(e, position))?.len()),
        None => Err(Error::corrupt(position, "no entry where one was expected")),
    }
}

/// Validates one magic 2 batch from a producer and prepares it for the log, in place: sets
/// baseOffset to `base` and partitionLeaderEpoch to the leader's; under `LogAppendTime` sets
/// the timestamp-type bit and maxTimestamp to `now`; under `CreateTime` corrects maxTimestamp
/// to the records' largest timestamp if the producer got it wrong. The CRC is recomputed only
/// when a covered byte changed. Returns the record count and the batch's stored maxTimestamp.
/// Errors carry positions within the batch.
///
/// A producer's batch must be what Kafka's producer sends: CRC valid, no log-append-time,
/// control or transactional bit (transactions are not supported), at least one record, offset
/// deltas exactly 0..n−1 with lastOffsetDelta = n−1.
fn prepare_batch(
    entry: &mut [u8],
    base: Offset,
    opts: &AppendOptions,
    scratch: &mut Vec<u8>,
) -> Result<(u32, TimestampMs)> {
    let size = entry.len() as u64 - u64::from(LOG_OVERHEAD_BYTES);
    if size > u64::from(opts.max_message_bytes) {
        return Err(Error::MessageTooLarge {
            size,
            max: u64::from(opts.max_message_bytes),
        });
    }
    let header = v2::BatchHeader::parse(entry)?;
    let computed = v2::compute_crc(entry);
    if computed != header.crc {
        return Err(Error::corrupt(
            0,
            format!(
                "CRC-32C mismatch: stored {:#010x}, computed {computed:#010x}",
                header.crc
            ),
        ));
    }
    if header.attributes.timestamp_type == TimestampType::LogAppendTime {
        return Err(log_append_time_from_producer(0));
    }
    if header.attributes.control || header.attributes.transactional {
        return Err(Error::InvalidRequest(
            "a transactional or control batch was sent; transactions are not supported".into(),
        ));
    }
    let records = v2::check_records(entry, &header, scratch)?;
    if records.count == 0 {
        return Err(Error::corrupt(0, "a magic 2 batch holds no records"));
    }
    if !records.dense || header.last_offset_delta != records.count - 1 {
        return Err(Error::corrupt(
            0,
            format!(
                "a producer's batch must have offset deltas 0..{} and lastOffsetDelta {} (has lastOffsetDelta {})",
                records.count - 1,
                records.count - 1,
                header.last_offset_delta
            ),
        ));
    }
    entry[OFFSET_POS..SIZE_POS].copy_from_slice(&base.0.to_be_bytes());
    entry[v2::PARTITION_LEADER_EPOCH_POS..MAGIC_POS]
        .copy_from_slice(&opts.leader_epoch.to_be_bytes());
    let max_ts = match opts.timestamp_type {
        TimestampType::LogAppendTime => {
            let attributes = v2::BatchAttributes {
                timestamp_type: TimestampType::LogAppendTime,
                ..header.attributes
            };
            entry[v2::ATTRIBUTES_POS..v2::LAST_OFFSET_DELTA_POS]
                .copy_from_slice(&attributes.to_bits().to_be_bytes());
            opts.now
        }
        TimestampType::CreateTime => records.max_timestamp,
    };
    if max_ts != header.max_timestamp || opts.timestamp_type == TimestampType::LogAppendTime {
        entry[v2::MAX_TIMESTAMP_POS..v2::PRODUCER_ID_POS].copy_from_slice(&max_ts.0.to_be_bytes());
        v2::rewrite_crc(entry);
    }
    Ok((records.count, max_ts))
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
        let inner = decompress_and_check(
            msg.attributes.compression,
            msg.magic,
            value,
            Crcs::Check,
            scratch,
        )
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
        MAGIC_V0 | MAGIC_V1 | MAGIC_V2 => Ok(()),
        m => Err(Error::corrupt(
            entry.position,
            format!("unknown magic {m} (this reader handles 0, 1 and 2)"),
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

/// Decompresses a wrapper's value into `scratch` and checks its inner entries (their CRCs as
/// `crcs` says). Errors carry position 0 (the wrapper) and name the inner byte in their reason.
fn decompress_and_check(
    codec: Compression,
    magic: u8,
    value: &[u8],
    crcs: Crcs,
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
        if crcs == Crcs::Check {
            inner.check_crc().map_err(inner_error)?;
        }
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
    /// Magic 2 records' headers, in order; empty for magic 0/1.
    pub headers: Headers<'a>,
}

/// Whether [`for_each_record_with`] checks CRCs: a consumer's `check.crcs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Crcs {
    /// Every entry's CRC, and every inner message's in a compressed wrapper.
    #[default]
    Check,
    /// None. The framing (lengths, magic, offsets, varints, decompression) is still checked,
    /// so a truncated or misframed set still fails; a changed byte inside a key or value does
    /// not. Kafka's consumer with `check.crcs=false`.
    Skip,
}

/// Visits every logical message of a set in offset order, decompressing wrappers into
/// `scratch`. Every CRC is checked. Used where the broker reads stored records back and by
/// tests (consumers use [`for_each_record_with`]); the broker never calls it on the fetch path.
/// Stops at the first error.
pub fn for_each_record(set: &[u8], scratch: &mut Vec<u8>, f: impl FnMut(Record<'_>)) -> Result<()> {
    for_each_record_with(set, Crcs::Check, scratch, f)
}

/// [`for_each_record`], checking CRCs or not as `crcs` says.
pub fn for_each_record_with(
    set: &[u8],
    crcs: Crcs,
    scratch: &mut Vec<u8>,
    mut f: impl FnMut(Record<'_>),
) -> Result<()> {
    for entry in Entries::new(set) {
        let entry = entry?;
        check_magic(&entry)?;
        if crcs == Crcs::Check {
            entry.check_crc()?;
        }
        if entry.magic() == MAGIC_V2 {
            for_each_batch_record(&entry, scratch, &mut f)?;
            continue;
        }
        let msg = entry.message()?;
        match msg.attributes.compression {
            Compression::None => f(Record {
                offset: msg.offset,
                timestamp: msg.timestamp,
                timestamp_type: msg.attributes.timestamp_type,
                key: msg.key,
                value: msg.value,
                headers: Headers::EMPTY,
            }),
            codec => {
                let value = msg.value.ok_or_else(|| {
                    Error::corrupt(entry.position, "compressed wrapper has a null value")
                })?;
                let count = decompress_and_check(codec, msg.magic, value, crcs, scratch)
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
                        headers: Headers::EMPTY,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The records of one magic 2 batch (CRC already checked), for [`for_each_record`], decoded
/// and checked in one pass. Control batches (transaction markers) carry no user data and are
/// skipped, as Kafka's consumer does.
fn for_each_batch_record(
    entry: &Entry<'_>,
    scratch: &mut Vec<u8>,
    f: &mut impl FnMut(Record<'_>),
) -> Result<()> {
    let at = |e: Error| shift(e, entry.position);
    let header = v2::BatchHeader::parse(entry.bytes).map_err(at)?;
    let section = v2::records_section(entry.bytes, &header, scratch).map_err(at)?;
    let control = header.attributes.control;
    let log_append = header.attributes.timestamp_type == TimestampType::LogAppendTime;
    v2::walk_records(section, &header, |rec| {
        if control {
            return;
        }
        let timestamp = if log_append {
            header.max_timestamp
        } else {
            TimestampMs(header.base_timestamp.0.wrapping_add(rec.timestamp_delta))
        };
        f(Record {
            offset: Offset(
                header
                    .base_offset
                    .0
                    .saturating_add(u64::from(rec.offset_delta)),
            ),
            timestamp,
            timestamp_type: header.attributes.timestamp_type,
            key: rec.key,
            value: rec.value,
            headers: rec.headers,
        });
    })
    .map_err(at)?;
    Ok(())
}

/// Builds a producer's message set (magic 0/1): uncompressed entries with offsets 0..n, or one
/// compressed wrapper holding them. The broker assigns the real offsets. [`SetBuilder`] chooses
/// between this and a magic 2 [`RecordBatchBuilder`].
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

/// Builds one producer batch in whichever magic its records need: the notes' magic 1 (or 0)
/// as [`MessageSetBuilder`] does, until a record carries headers, which only magic 2 can hold;
/// that record upgrades the batch to a [`RecordBatchBuilder`] (the records pushed so far are
/// carried over once, without headers). Built as magic 2 from the start when asked for
/// (`message.format.version` 2). This is the producer's rule from issue 14: magic 2 for a batch
/// whose records carry headers, the configured magic otherwise.
#[derive(Debug)]
pub struct SetBuilder {
    inner: SetInner,
}

#[derive(Debug)]
enum SetInner {
    Messages(MessageSetBuilder),
    Batch(RecordBatchBuilder),
}

impl SetBuilder {
    /// `magic` is the lowest magic to write: 0 or 1 (upgraded to 2 by a record with headers),
    /// or 2. `bytes` is a capacity hint.
    pub fn with_capacity(magic: u8, compression: Compression, bytes: usize) -> SetBuilder {
        let inner = if magic >= MAGIC_V2 {
            SetInner::Batch(RecordBatchBuilder::with_capacity(compression, bytes))
        } else {
            SetInner::Messages(MessageSetBuilder::with_capacity(magic, compression, bytes))
        };
        SetBuilder { inner }
    }

    /// The magic the batch is being written in.
    pub fn magic(&self) -> u8 {
        match &self.inner {
            SetInner::Messages(b) => b.magic,
            SetInner::Batch(_) => MAGIC_V2,
        }
    }

    pub fn push<'h, H>(
        &mut self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: H,
    ) where
        H: IntoIterator<Item = Header<'h>>,
        H::IntoIter: ExactSizeIterator,
    {
        let headers = headers.into_iter();
        if headers.len() > 0
            && let SetInner::Messages(b) = &self.inner
        {
            self.inner = SetInner::Batch(upgrade(b));
        }
        match &mut self.inner {
            SetInner::Messages(b) => b.push(timestamp, key, value),
            SetInner::Batch(b) => b.push(timestamp, key, value, headers),
        }
    }

    pub fn len(&self) -> u64 {
        match &self.inner {
            SetInner::Messages(b) => b.len(),
            SetInner::Batch(b) => u64::from(b.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes written so far (uncompressed).
    pub fn size_bytes(&self) -> usize {
        match &self.inner {
            SetInner::Messages(b) => b.size_bytes(),
            SetInner::Batch(b) => b.size_bytes(),
        }
    }

    /// Stamps the idempotent producer's fields (the batch becomes magic 2 if it was not).
    pub fn producer_state(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        if let SetInner::Messages(b) = &self.inner {
            self.inner = SetInner::Batch(upgrade(b));
        }
        if let SetInner::Batch(b) = &mut self.inner {
            b.producer_state(producer_id, producer_epoch, base_sequence);
        }
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        match self.inner {
            SetInner::Messages(b) => b.finish(),
            SetInner::Batch(b) => b.finish(),
        }
    }
}

/// The records of a magic 0/1 builder (uncompressed entries, offsets 0..n) as a magic 2 one.
fn upgrade(b: &MessageSetBuilder) -> RecordBatchBuilder {
    let mut out = RecordBatchBuilder::with_capacity(b.compression, b.buf.len());
    for entry in Entries::new(&b.buf) {
        // Written by `write_entry` just before: framed and well formed.
        let Ok(m) = entry.and_then(|e| e.message()) else {
            debug_assert!(false, "a builder's own entries parse");
            continue;
        };
        // Magic 0 has no timestamp (−1); magic 2 records always have one, and −1 it is.
        out.push(m.timestamp, m.key, m.value, []);
    }
    out
}

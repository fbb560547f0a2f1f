//! Magic 2: Kafka's RecordBatch v2, byte for byte (KIP-98's layout; Kafka's
//! `DefaultRecordBatch.java` and `DefaultRecord.java`). `docs/FORMAT.md` specifies it with
//! golden vectors made by an independent encoder (`scripts/golden_v2.py`).
//!
//! ```text
//! batch  = baseOffset i64 · batchLength i32 · partitionLeaderEpoch i32 · magic i8 (= 2)
//!          · crc u32 · attributes i16 · lastOffsetDelta i32 · baseTimestamp i64
//!          · maxTimestamp i64 · producerId i64 · producerEpoch i16 · baseSequence i32
//!          · recordCount i32 · records            (61 bytes before the records)
//! record = length varint · attributes i8 · timestampDelta varlong · offsetDelta varint
//!          · keyLength varint (-1 = null) · key · valueLength varint (-1 = null) · value
//!          · headerCount varint · headers
//! header = keyLength varint · key (UTF-8) · valueLength varint (-1 = null) · value
//! ```
//! Big-endian fixed-width integers; varints are zigzag-encoded LEB128 (protobuf's `sint32` /
//! `sint64`). `batchLength` sits where the notes' entries keep `size` and counts the bytes after
//! itself, so one framing rule (next entry = position + 12 + size) walks a log mixing magics, and
//! the magic byte is at byte 16 in both. The CRC is CRC-32C (Castagnoli), not the IEEE CRC-32
//! of magic 0/1, and covers attributes to the end: baseOffset, batchLength and
//! partitionLeaderEpoch are outside it, so the broker assigns offsets and stamps the leader
//! epoch without recomputing it.
//!
//! Attributes: bits 0–2 compression (the codes of magic 0/1), bit 3 timestamp type, bit 4
//! transactional, bit 5 control; other bits are refused. When compressed, only the records
//! section is (the 61-byte header never is), with the same codecs as magic 0/1 wrappers.
//! A record's offset is baseOffset + offsetDelta, its timestamp baseTimestamp + timestampDelta
//! (maxTimestamp when the batch has the log-append-time bit).
//!
//! Invariants: decoding never panics and never allocates more than the named limits allow;
//! every length is checked against the bytes present before it is used.

use crate::error::{Error, Result};
use crate::format::compression::{self, Compression};
use crate::format::{MAGIC_POS, MAGIC_V2, TimestampType};
use crate::limits::{
    LOG_OVERHEAD_BYTES, RECORD_BATCH_HEADER_BYTES, RECORD_HEADERS_MAX, WRAPPER_MESSAGES_MAX,
};
use crate::types::{Offset, TimestampMs};

/// Byte positions within a magic 2 batch (an entry of the log).
pub const PARTITION_LEADER_EPOCH_POS: usize = 12;
pub const CRC_POS: usize = 17;
pub const ATTRIBUTES_POS: usize = 21;
pub const LAST_OFFSET_DELTA_POS: usize = 23;
pub const BASE_TIMESTAMP_POS: usize = 27;
pub const MAX_TIMESTAMP_POS: usize = 35;
pub const PRODUCER_ID_POS: usize = 43;
pub const PRODUCER_EPOCH_POS: usize = 51;
pub const BASE_SEQUENCE_POS: usize = 53;
pub const RECORD_COUNT_POS: usize = 57;
pub const RECORDS_POS: usize = RECORD_BATCH_HEADER_BYTES as usize;

/// Kafka's "no producer id" (`RecordBatch.NO_PRODUCER_ID`), epoch and sequence.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;

const COMPRESSION_MASK: u16 = 0x07;
const TIMESTAMP_TYPE_BIT: u16 = 0x08;
const TRANSACTIONAL_BIT: u16 = 0x10;
const CONTROL_BIT: u16 = 0x20;
const KNOWN_BITS: u16 = COMPRESSION_MASK | TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT;

/// The 16-bit attributes of a batch, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BatchAttributes {
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    pub transactional: bool,
    pub control: bool,
}

impl BatchAttributes {
    pub fn to_bits(self) -> u16 {
        let mut b = u16::from(self.compression.code());
        if self.timestamp_type == TimestampType::LogAppendTime {
            b |= TIMESTAMP_TYPE_BIT;
        }
        if self.transactional {
            b |= TRANSACTIONAL_BIT;
        }
        if self.control {
            b |= CONTROL_BIT;
        }
        b
    }

    pub fn from_bits(b: u16) -> Result<BatchAttributes> {
        if b & !KNOWN_BITS != 0 {
            return Err(Error::corrupt(
                0,
                format!("reserved batch attribute bits set: {b:#06x}"),
            ));
        }
        Ok(BatchAttributes {
            compression: Compression::from_code((b & COMPRESSION_MASK) as u8)?,
            timestamp_type: if b & TIMESTAMP_TYPE_BIT != 0 {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            transactional: b & TRANSACTIONAL_BIT != 0,
            control: b & CONTROL_BIT != 0,
        })
    }
}

/// The fixed 61-byte header of a batch, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    /// Bytes after the `batchLength` field (the entry's `size`).
    pub batch_length: u32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: BatchAttributes,
    pub last_offset_delta: u32,
    pub base_timestamp: TimestampMs,
    pub max_timestamp: TimestampMs,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(u64::from(self.last_offset_delta)),
        )
    }

    /// Parses the header of a framed entry (`entry` is the whole batch, 12-byte overhead
    /// included). Checks the magic, the attributes and the counts; not the CRC.
    pub fn parse(entry: &[u8]) -> Result<BatchHeader> {
        if entry.len() < RECORDS_POS {
            return Err(Error::corrupt(
                0,
                format!(
                    "magic 2 batch of {} bytes is shorter than its {RECORDS_POS}-byte header",
                    entry.len()
                ),
            ));
        }
        if entry[MAGIC_POS] != MAGIC_V2 {
            return Err(Error::corrupt(
                0,
                format!(
                    "magic {} where a magic 2 batch was expected",
                    entry[MAGIC_POS]
                ),
            ));
        }
        let attributes = BatchAttributes::from_bits(be_u16(entry, ATTRIBUTES_POS))?;
        let last_offset_delta = be_i32(entry, LAST_OFFSET_DELTA_POS);
        let record_count = be_i32(entry, RECORD_COUNT_POS);
        if last_offset_delta < 0 {
            return Err(Error::corrupt(
                0,
                format!("lastOffsetDelta {last_offset_delta} is negative"),
            ));
        }
        if record_count < 0 || record_count as u32 > WRAPPER_MESSAGES_MAX {
            return Err(Error::corrupt(
                0,
                format!("recordCount {record_count} is outside 0..={WRAPPER_MESSAGES_MAX}"),
            ));
        }
        if last_offset_delta as u32 >= WRAPPER_MESSAGES_MAX {
            return Err(Error::corrupt(
                0,
                format!(
                    "lastOffsetDelta {last_offset_delta} spans more than {WRAPPER_MESSAGES_MAX} offsets"
                ),
            ));
        }
        Ok(BatchHeader {
            base_offset: Offset(be_u64(entry, 0)),
            batch_length: be_u32(entry, 8),
            partition_leader_epoch: be_i32(entry, PARTITION_LEADER_EPOCH_POS),
            crc: be_u32(entry, CRC_POS),
            attributes,
            last_offset_delta: last_offset_delta as u32,
            base_timestamp: TimestampMs(be_u64(entry, BASE_TIMESTAMP_POS) as i64),
            max_timestamp: TimestampMs(be_u64(entry, MAX_TIMESTAMP_POS) as i64),
            producer_id: be_u64(entry, PRODUCER_ID_POS) as i64,
            producer_epoch: be_u16(entry, PRODUCER_EPOCH_POS) as i16,
            base_sequence: be_i32(entry, BASE_SEQUENCE_POS),
            record_count: record_count as u32,
        })
    }
}

/// `sequence + n`, wrapping from `i32::MAX` to 0 as Kafka's sequences do.
pub fn next_sequence(sequence: i32, n: i32) -> i32 {
    let wrapped = i64::from(sequence) + i64::from(n);
    (wrapped % (i64::from(i32::MAX) + 1)) as i32
}

/// The CRC-32C a batch should carry: over attributes to the end.
pub fn compute_crc(entry: &[u8]) -> u32 {
    crc32c::crc32c(&entry[ATTRIBUTES_POS..])
}

/// Recomputes and stores the CRC of a batch whose covered bytes were changed.
/// Sets a built batch's producer id, epoch and base sequence and recomputes its CRC (a batch
/// the producer numbered but never sent gets the next epoch's numbers).
pub fn restamp(entry: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    entry[PRODUCER_ID_POS..PRODUCER_ID_POS + 8].copy_from_slice(&producer_id.to_be_bytes());
    entry[PRODUCER_EPOCH_POS..PRODUCER_EPOCH_POS + 2]
        .copy_from_slice(&producer_epoch.to_be_bytes());
    entry[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4].copy_from_slice(&base_sequence.to_be_bytes());
    rewrite_crc(entry);
}

pub fn rewrite_crc(entry: &mut [u8]) {
    let crc = compute_crc(entry);
    entry[CRC_POS..ATTRIBUTES_POS].copy_from_slice(&crc.to_be_bytes());
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    be_u32(b, at) as i32
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

// ---------------------------------------------------------------------------------------------
// Varints

/// Appends `v` zigzag-encoded as a LEB128 varint (protobuf's `sint64`; `sint32` for values that
/// fit an i32 gives the same bytes).
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Bytes [`put_varlong`] writes for `v`.
pub fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// A cursor over a records section; every read is bounds-checked.
#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varlong(&mut self, what: &str) -> Result<i64> {
        let mut z = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.at) else {
                return Err(Error::corrupt(
                    self.at,
                    format!("{what} varint runs past the end"),
                ));
            };
            self.at += 1;
            if i == 9 && b > 1 {
                return Err(Error::corrupt(
                    self.at,
                    format!("{what} varint overflows 64 bits"),
                ));
            }
            z |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(Error::corrupt(
            self.at,
            format!("{what} varint is longer than 10 bytes"),
        ))
    }

    fn varint(&mut self, what: &str) -> Result<i32> {
        let v = self.varlong(what)?;
        i32::try_from(v)
            .map_err(|_| Error::corrupt(self.at, format!("{what} {v} does not fit 32 bits")))
    }

    fn i8(&mut self, what: &str) -> Result<u8> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or_else(|| Error::corrupt(self.at, format!("{what} runs past the end")))?;
        self.at += 1;
        Ok(b)
    }

    /// A varint length and that many bytes; -1 is null, other negatives are refused.
    fn bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(Error::corrupt(
                self.at,
                format!("{what} length {len} is negative"),
            ));
        }
        let len = len as usize;
        if len > self.buf.len() - self.at {
            return Err(Error::corrupt(
                self.at,
                format!(
                    "{what} length {len} runs past the end ({} bytes left)",
                    self.buf.len() - self.at
                ),
            ));
        }
        let b = &self.buf[self.at..self.at + len];
        self.at += len;
        Ok(Some(b))
    }
}

// ---------------------------------------------------------------------------------------------
// Records and headers

/// One header of a record, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// A record's headers, borrowed from the decoded records section: validated when the record
/// was decoded, so iterating cannot fail. Magic 0/1 messages have none ([`Headers::EMPTY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Headers<'a> {
    raw: &'a [u8],
    count: u32,
}

impl<'a> Headers<'a> {
    pub const EMPTY: Headers<'static> = Headers { raw: &[], count: 0 };

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            r: Reader {
                buf: self.raw,
                at: 0,
            },
            left: self.count,
        }
    }

    /// Checks `count` headers at the start of `r` and returns them.
    fn parse(r: &mut Reader<'a>, count: u32) -> Result<Headers<'a>> {
        let start = r.at;
        for _ in 0..count {
            read_header(r)?;
        }
        Ok(Headers {
            raw: &r.buf[start..r.at],
            count,
        })
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = Header<'a>;
    type IntoIter = HeaderIter<'a>;
    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

fn read_header<'a>(r: &mut Reader<'a>) -> Result<Header<'a>> {
    let key = r
        .bytes("header key")?
        .ok_or_else(|| Error::corrupt(r.at, "a header key is null"))?;
    let key = std::str::from_utf8(key)
        .map_err(|e| Error::corrupt(r.at, format!("a header key is not UTF-8: {e}")))?;
    let value = r.bytes("header value")?;
    Ok(Header { key, value })
}

#[derive(Debug)]
pub struct HeaderIter<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;
    fn next(&mut self) -> Option<Header<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated by `Headers::parse`; a failure here would be a bug, so stop rather than panic.
        read_header(&mut self.r).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// One record of a batch, borrowed from its (decompressed) records section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: u32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// Iterates the records of a records section, checking each fully (lengths, varints, header
/// keys' UTF-8). Error positions are within the section. Stops after the first error.
#[derive(Debug)]
pub struct Records<'a> {
    r: Reader<'a>,
    left: u32,
    failed: bool,
}

impl<'a> Records<'a> {
    pub fn new(section: &'a [u8], count: u32) -> Records<'a> {
        Records {
            r: Reader {
                buf: section,
                at: 0,
            },
            left: count,
            failed: false,
        }
    }

    /// After the last record: whether the section had bytes left over (an error).
    pub fn check_end(&self) -> Result<()> {
        if self.r.at != self.r.buf.len() {
            return Err(Error::corrupt(
                self.r.at,
                format!(
                    "{} trailing bytes after the last record",
                    self.r.buf.len() - self.r.at
                ),
            ));
        }
        Ok(())
    }

    fn record(&mut self) -> Result<BatchRecord<'a>> {
        let r = &mut self.r;
        let len = r.varint("record length")?;
        if len < 0 || len as usize > r.buf.len() - r.at {
            return Err(Error::corrupt(
                r.at,
                format!(
                    "record length {len} does not fit the {} bytes left",
                    r.buf.len() - r.at
                ),
            ));
        }
        let end = r.at + len as usize;
        let mut rec = Reader {
            buf: &r.buf[..end],
            at: r.at,
        };
        let _attributes = rec.i8("record attributes")?;
        let timestamp_delta = rec.varlong("timestampDelta")?;
        let offset_delta = rec.varint("offsetDelta")?;
        if offset_delta < 0 {
            return Err(Error::corrupt(
                rec.at,
                format!("offsetDelta {offset_delta} is negative"),
            ));
        }
        let key = rec.bytes("key")?;
        let value = rec.bytes("value")?;
        let count = rec.varint("headerCount")?;
        if count < 0 || count as u32 > RECORD_HEADERS_MAX {
            return Err(Error::corrupt(
                rec.at,
                format!("headerCount {count} is outside 0..={RECORD_HEADERS_MAX}"),
            ));
        }
        let headers = Headers::parse(&mut rec, count as u32)?;
        if rec.at != end {
            return Err(Error::corrupt(
                rec.at,
                format!("record length {len} leaves {} bytes unread", end - rec.at),
            ));
        }
        r.at = end;
        Ok(BatchRecord {
            timestamp_delta,
            offset_delta: offset_delta as u32,
            key,
            value,
            headers,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<BatchRecord<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rec = self.record();
        self.failed = rec.is_err();
        Some(rec)
    }
}

/// A batch's records section, decompressed into `scratch` when needed (bounded by
/// `DECOMPRESSED_BYTES_MAX`). `entry` is the whole batch.
pub fn records_section<'a>(
    entry: &'a [u8],
    header: &BatchHeader,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let section = &entry[RECORDS_POS..];
    match header.attributes.compression {
        Compression::None => Ok(section),
        codec => {
            compression::decompress(codec, section, scratch)?;
            Ok(&scratch[..])
        }
    }
}

/// What [`check_records`] learned about a batch's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsSummary {
    pub count: u32,
    /// Largest record timestamp (base + delta); `TimestampMs::NONE` for an empty batch.
    pub max_timestamp: TimestampMs,
    /// Offset deltas are exactly 0, 1, …, count−1 (what a producer must send).
    pub dense: bool,
    pub last_offset_delta: Option<u32>,
}

/// Decodes every record of a batch (decompressing into `scratch`) and checks it: see
/// [`walk_records`].
pub fn check_records(
    entry: &[u8],
    header: &BatchHeader,
    scratch: &mut Vec<u8>,
) -> Result<RecordsSummary> {
    let section = records_section(entry, header, scratch)?;
    walk_records(section, header, |_| {})
}

/// Decodes every record of a (decompressed) records section in one pass, handing each to
/// `visit` once it is checked: offset deltas increase and stay within `lastOffsetDelta`. At the
/// end, checks that exactly `recordCount` records were there and no bytes trail; so on an error
/// `visit` may have seen the records before it (a reader of a CRC-checked batch never meets
/// one: the broker checked the records when it appended them). Errors carry position 0 (the
/// batch) and name the record's byte.
pub fn walk_records<'a>(
    section: &'a [u8],
    header: &BatchHeader,
    mut visit: impl FnMut(&BatchRecord<'a>),
) -> Result<RecordsSummary> {
    let mut summary = RecordsSummary {
        count: 0,
        max_timestamp: TimestampMs::NONE,
        dense: true,
        last_offset_delta: None,
    };
    let mut records = Records::new(section, header.record_count);
    for rec in records.by_ref() {
        let rec = rec.map_err(in_records)?;
        if let Some(prev) = summary.last_offset_delta
            && rec.offset_delta <= prev
        {
            return Err(Error::corrupt(
                0,
                format!(
                    "record offsetDelta {} does not follow {prev}",
                    rec.offset_delta
                ),
            ));
        }
        if rec.offset_delta > header.last_offset_delta {
            return Err(Error::corrupt(
                0,
                format!(
                    "record offsetDelta {} is past lastOffsetDelta {}",
                    rec.offset_delta, header.last_offset_delta
                ),
            ));
        }
        summary.dense &= rec.offset_delta == summary.count;
        summary.last_offset_delta = Some(rec.offset_delta);
        summary.count += 1;
        let ts = TimestampMs(header.base_timestamp.0.wrapping_add(rec.timestamp_delta));
        if summary.count == 1 || ts > summary.max_timestamp {
            summary.max_timestamp = ts;
        }
        visit(&rec);
    }
    records.check_end().map_err(in_records)?;
    if summary.count != header.record_count {
        // Only reachable when a record failed, which returned above; kept as a guard.
        return Err(Error::corrupt(
            0,
            format!(
                "recordCount {} but {} records decoded",
                header.record_count, summary.count
            ),
        ));
    }
    Ok(summary)
}

fn in_records(e: Error) -> Error {
    match e {
        Error::CorruptMessage { position, reason } => Error::corrupt(
            0,
            format!("in the records section at byte {position}: {reason}"),
        ),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Builder

/// Builds one magic 2 batch as a producer sends it: baseOffset 0, partitionLeaderEpoch 0 (the
/// broker sets both), offset deltas 0..n, create-time timestamps relative to the first record.
#[derive(Debug)]
pub struct RecordBatchBuilder {
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// The 61-byte header (zeroed until `finish`), then the uncompressed records.
    buf: Vec<u8>,
    count: u32,
    base_timestamp: TimestampMs,
    max_timestamp: TimestampMs,
    /// Scratch for one record's body and for its headers, reused: no allocation per record
    /// once they have grown.
    record: Vec<u8>,
    headers: Vec<u8>,
}

impl RecordBatchBuilder {
    pub fn new(compression: Compression) -> RecordBatchBuilder {
        RecordBatchBuilder::with_capacity(compression, 0)
    }

    pub fn with_capacity(compression: Compression, bytes: usize) -> RecordBatchBuilder {
        let mut buf = Vec::with_capacity(RECORDS_POS + bytes);
        buf.resize(RECORDS_POS, 0);
        RecordBatchBuilder {
            compression,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            buf,
            count: 0,
            base_timestamp: TimestampMs::NONE,
            max_timestamp: TimestampMs::NONE,
            record: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Sets the idempotent producer's fields (Kafka's `setProducerState`).
    pub fn producer_state(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Appends one record. The caller bounds sizes (a producer checks them against the limits).
    pub fn push<'h>(
        &mut self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = Header<'h>>,
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let body = &mut self.record;
        body.clear();
        body.push(0); // record attributes: unused by Kafka, always 0
        put_varlong(body, timestamp.0.wrapping_sub(self.base_timestamp.0));
        put_varlong(body, i64::from(self.count));
        let put_bytes = |body: &mut Vec<u8>, b: Option<&[u8]>| match b {
            None => put_varlong(body, -1),
            Some(b) => {
                put_varlong(body, b.len() as i64);
                body.extend_from_slice(b);
            }
        };
        put_bytes(body, key);
        put_bytes(body, value);
        // The header count precedes the headers, which come from an iterator: encode them
        // aside first, then the count, then them.
        let encoded = &mut self.headers;
        encoded.clear();
        let mut n = 0i64;
        for h in headers {
            put_bytes(encoded, Some(h.key.as_bytes()));
            put_bytes(encoded, h.value);
            n += 1;
        }
        put_varlong(body, n);
        body.extend_from_slice(encoded);
        put_varlong(&mut self.buf, body.len() as i64);
        self.buf.extend_from_slice(body);
        self.count += 1;
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes written so far (uncompressed, header included).
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The finished batch; empty when no record was pushed.
    pub fn finish(self) -> Result<Vec<u8>> {
        if self.count == 0 {
            return Ok(Vec::new());
        }
        let mut out = if self.compression == Compression::None {
            self.buf
        } else {
            let mut out = Vec::with_capacity(RECORDS_POS + self.buf.len() / 2 + 64);
            out.resize(RECORDS_POS, 0);
            compression::compress(self.compression, &self.buf[RECORDS_POS..], &mut out)?;
            out
        };
        let batch_length = u32::try_from(out.len() - LOG_OVERHEAD_BYTES as usize)
            .map_err(|_| Error::InvalidRequest("batch larger than 4 GiB".into()))?;
        let attributes = BatchAttributes {
            compression: self.compression,
            ..BatchAttributes::default()
        };
        let h = &mut out[..RECORDS_POS];
        h[..8].copy_from_slice(&0u64.to_be_bytes());
        h[8..12].copy_from_slice(&batch_length.to_be_bytes());
        h[PARTITION_LEADER_EPOCH_POS..MAGIC_POS].copy_from_slice(&0i32.to_be_bytes());
        h[MAGIC_POS] = MAGIC_V2;
        h[ATTRIBUTES_POS..LAST_OFFSET_DELTA_POS]
            .copy_from_slice(&attributes.to_bits().to_be_bytes());
        h[LAST_OFFSET_DELTA_POS..BASE_TIMESTAMP_POS]
            .copy_from_slice(&(self.count - 1).to_be_bytes());
        h[BASE_TIMESTAMP_POS..MAX_TIMESTAMP_POS]
            .copy_from_slice(&self.base_timestamp.0.to_be_bytes());
        h[MAX_TIMESTAMP_POS..PRODUCER_ID_POS].copy_from_slice(&self.max_timestamp.0.to_be_bytes());
        h[PRODUCER_ID_POS..PRODUCER_EPOCH_POS].copy_from_slice(&self.producer_id.to_be_bytes());
        h[PRODUCER_EPOCH_POS..BASE_SEQUENCE_POS]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        h[BASE_SEQUENCE_POS..RECORD_COUNT_POS].copy_from_slice(&self.base_sequence.to_be_bytes());
        h[RECORD_COUNT_POS..RECORDS_POS].copy_from_slice(&self.count.to_be_bytes());
        rewrite_crc(&mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_round_trips_at_the_edges() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "{v}");
            let mut r = Reader { buf: &out, at: 0 };
            assert_eq!(r.varlong("v").unwrap(), v);
            assert_eq!(r.at, out.len());
        }
        // Zigzag: -1 is 0x01, 1 is 0x02, -64 is 0x7f, 64 is 0x80 0x01.
        let enc = |v| {
            let mut o = Vec::new();
            put_varlong(&mut o, v);
            o
        };
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(-64), [0x7f]);
        assert_eq!(enc(64), [0x80, 0x01]);
    }

    #[test]
    fn bad_varints_are_errors() {
        let mut r = Reader {
            buf: &[0x80, 0x80],
            at: 0,
        };
        assert!(r.varlong("x").is_err());
        let eleven = [0xffu8; 11];
        let mut r = Reader {
            buf: &eleven,
            at: 0,
        };
        assert!(r.varlong("x").is_err());
        let mut big = Vec::new();
        put_varlong(&mut big, i64::from(i32::MAX) + 1);
        let mut r = Reader { buf: &big, at: 0 };
        assert!(r.varint("x").is_err());
    }
}

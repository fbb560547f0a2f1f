// The message format: the core's decoder, for tools and the golden-vector tests (C4).
package dev.sluiceway

typealias DecodedRecord = dev.sluiceway.ffi.DecodedRecord
typealias TimestampType = dev.sluiceway.ffi.TimestampType

/**
 * Decodes a stored message set (segment bytes or a fetch answer) with the core's codec: every
 * record in offset order, compressed wrappers opened, every CRC checked. A damaged set throws
 * the typed exception of its error (CORRUPT_MESSAGE, …).
 */
fun decodeMessageSet(data: ByteArray): List<DecodedRecord> = native { dev.sluiceway.ffi.decodeMessageSet(data) }

// The producer: a thin layer over the generated `dev.sluiceway.ffi.Producer`. Every rule
// (batching, partitioning, retries, delivery timeouts) is the core's.
package dev.sluiceway

import dev.sluiceway.ffi.DeliveryResult
import java.time.Duration
import dev.sluiceway.ffi.Delivery as NativeDelivery
import dev.sluiceway.ffi.Producer as NativeProducer

typealias ProducerRecord = dev.sluiceway.ffi.ProducerRecord
typealias RecordMetadata = dev.sluiceway.ffi.RecordMetadata

/** A producer configured by Kafka-named keys (`bootstrap.servers`, `linger.ms`, …). */
class Producer(config: Map<String, String>) : AutoCloseable {
    constructor(vararg config: Pair<String, String>) : this(mapOf(*config))

    init {
        CallbackThreads.install()
    }

    private val inner: NativeProducer = native { NativeProducer(config) }

    /** Sends one record and suspends until it is delivered (or throws its typed error). */
    suspend fun send(record: ProducerRecord): RecordMetadata = native { inner.send(record) }

    suspend fun send(topic: String, value: ByteArray?, key: ByteArray? = null, partition: Int? = null): RecordMetadata =
        send(ProducerRecord(topic, value, key, partition, null))

    /** Queues one record (blocking while the buffer is full); `get()` waits for its report. */
    fun sendBlocking(record: ProducerRecord): PendingDelivery = PendingDelivery(native { inner.sendBlocking(record) })

    /** Sends a batch (one native call) and suspends until every record has its report, in order. */
    suspend fun sendBatch(records: List<ProducerRecord>): List<Result<RecordMetadata>> =
        native { inner.sendBatch(records) }.map(::result)

    /** Sends a batch and waits up to `timeout` (`null`: until every record resolves). */
    fun sendBatchBlocking(records: List<ProducerRecord>, timeout: Duration? = null): List<Result<RecordMetadata>> =
        native { inner.sendBatchBlocking(records, timeout) }.map(::result)

    suspend fun flush(timeout: Duration? = null) = native { inner.flush(timeout) }

    fun flushBlocking(timeout: Duration? = null) = native { inner.flushBlocking(timeout) }

    /** Closes, failing what is still pending after `timeout` with CLOSED (reported as an error). */
    fun close(timeout: Duration?) = native { inner.closeBlocking(timeout) }

    suspend fun closeSuspending(timeout: Duration? = null) = native { inner.close(timeout) }

    /** `use { }`: closes, waiting for pending records up to `delivery.timeout.ms`. */
    override fun close() = close(null)

    private fun result(r: DeliveryResult): Result<RecordMetadata> =
        r.metadata?.let { Result.success(it) } ?: Result.failure(r.error!!.typed())
}

/** The delivery report of one `sendBlocking`. */
class PendingDelivery internal constructor(private val inner: NativeDelivery) {
    /** Waits up to `timeout` (`null`: until resolved) and returns the metadata or throws. */
    fun get(timeout: Duration? = null): RecordMetadata = native { inner.wait(timeout) }

    val isDone: Boolean get() = inner.isDone()
}

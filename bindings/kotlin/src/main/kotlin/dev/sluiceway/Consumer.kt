// The consumer: a thin layer over the generated `dev.sluiceway.ffi.Consumer`, plus Flows over
// `poll`. Positions, prefetching, groups, commits and rebalances are the core's.
package dev.sluiceway

import dev.sluiceway.ffi.RebalanceEvent
import java.time.Duration
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import dev.sluiceway.ffi.Consumer as NativeConsumer

typealias Record = dev.sluiceway.ffi.Record
typealias RecordHeader = dev.sluiceway.ffi.RecordHeader
typealias TopicPartition = dev.sluiceway.ffi.TopicPartition
typealias PollBatch = dev.sluiceway.ffi.PollBatch
typealias PartitionOffset = dev.sluiceway.ffi.PartitionOffset

/** A consumer configured by Kafka-named keys (`bootstrap.servers`, `group.id`, …). */
class Consumer(config: Map<String, String>) : AutoCloseable {
    constructor(vararg config: Pair<String, String>) : this(mapOf(*config))

    init {
        CallbackThreads.install()
    }

    private val inner: NativeConsumer = native { NativeConsumer(config) }

    fun assign(partitions: List<TopicPartition>) = native { inner.assign(partitions) }

    fun assignment(): List<TopicPartition> = inner.assignment()

    /** Joins the consumer group of `group.id` for these topics. */
    fun subscribe(topics: List<String>) = native { inner.subscribeBlocking(topics) }

    fun subscription(): List<String> = inner.subscription()

    fun unsubscribe() = native { inner.unsubscribeBlocking() }

    /** Java-style blocking poll: records within `timeout` (rebalance events are handled silently). */
    fun poll(timeout: Duration): List<Record> = native { inner.pollBlocking(timeout) }

    /** Records or rebalance events (events come alone, before the new assignment's records). */
    fun pollBatch(timeout: Duration, maxRecords: UInt? = null): PollBatch = native { inner.pollBatchBlocking(timeout, maxRecords) }

    /** The suspending poll; cancelling the coroutine takes no records. */
    suspend fun awaitPoll(timeout: Duration): List<Record> = native { inner.poll(timeout) }

    suspend fun awaitPollBatch(timeout: Duration, maxRecords: UInt? = null): PollBatch =
        native { inner.pollBatch(timeout, maxRecords) }

    /**
     * Every non-empty poll result, records and rebalance events, until the collector stops.
     * The loop is the Flow idiom itself; each iteration is one suspending core poll.
     */
    fun batches(pollTimeout: Duration, maxRecords: UInt? = null): Flow<PollBatch> = flow {
        while (true) {
            currentCoroutineContext().ensureActive()
            val batch = awaitPollBatch(pollTimeout, maxRecords)
            if (batch.records.isNotEmpty() || batch.events.isNotEmpty()) emit(batch)
        }
    }

    /**
     * The records as a Flow; `onRebalance` runs on the collector's coroutine for each event, so
     * a `commit()` in it for a `Revoked` event lands before another member takes the partitions.
     */
    fun records(pollTimeout: Duration, onRebalance: suspend (RebalanceEvent) -> Unit = {}): Flow<Record> = flow {
        batches(pollTimeout).collect { batch ->
            for (event in batch.events) onRebalance(event)
            for (record in batch.records) emit(record)
        }
    }

    fun seek(partition: TopicPartition, offset: Long) = native { inner.seek(partition, offset) }

    /** `null`: every assigned partition. */
    fun seekToBeginning(partitions: List<TopicPartition>? = null) = native { inner.seekToBeginningBlocking(partitions) }

    fun seekToEnd(partitions: List<TopicPartition>? = null) = native { inner.seekToEndBlocking(partitions) }

    fun seekToTimestamp(timestampMs: Long, partitions: List<TopicPartition>? = null) =
        native { inner.seekToTimestampBlocking(timestampMs, partitions) }

    fun position(partition: TopicPartition): Long = native { inner.positionBlocking(partition) }

    fun committed(partition: TopicPartition): Long? = native { inner.committed(partition) }

    /** Commits the current positions and waits (Kafka's `commitSync`). */
    fun commitSync() = native { inner.commitBlocking() }

    fun commitSync(offsets: Map<TopicPartition, Long>) =
        native { inner.commitOffsetsBlocking(offsets.map { (tp, o) -> PartitionOffset(tp.topic, tp.partition, o) }) }

    /** Commits the current positions, suspending. */
    suspend fun commit() = native { inner.commit() }

    fun pause(partitions: List<TopicPartition>) = native { inner.pause(partitions) }

    fun resume(partitions: List<TopicPartition>) = native { inner.resume(partitions) }

    fun paused(): List<TopicPartition> = inner.paused()

    fun close(timeout: Duration?) = native { inner.closeBlocking(timeout) }

    suspend fun closeSuspending(timeout: Duration? = null) = native { inner.close(timeout) }

    /** `use { }`: leaves the group and closes; later calls throw [ClientClosedException]. */
    override fun close() = close(null)
}

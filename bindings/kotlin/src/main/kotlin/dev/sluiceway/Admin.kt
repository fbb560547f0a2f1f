// The admin client: a thin layer over the generated `dev.sluiceway.ffi.Admin`.
package dev.sluiceway

import dev.sluiceway.ffi.OffsetQuery
import dev.sluiceway.ffi.OffsetSpec
import dev.sluiceway.ffi.Admin as NativeAdmin

typealias TopicListing = dev.sluiceway.ffi.TopicListing
typealias TopicDescription = dev.sluiceway.ffi.TopicDescription
typealias PartitionInfo = dev.sluiceway.ffi.PartitionInfo
typealias GroupListing = dev.sluiceway.ffi.GroupListing
typealias GroupState = dev.sluiceway.ffi.GroupState
typealias GroupDescription = dev.sluiceway.ffi.GroupDescription
typealias MemberDescription = dev.sluiceway.ffi.MemberDescription
typealias CommittedOffset = dev.sluiceway.ffi.CommittedOffset
typealias GroupPartitionLag = dev.sluiceway.ffi.GroupPartitionLag
typealias ListedOffset = dev.sluiceway.ffi.ListedOffset
// OffsetSpec (Earliest, Latest, Timestamp(ms)) is used as `dev.sluiceway.ffi.OffsetSpec`: a
// typealias would hide its nested variants (as with `dev.sluiceway.ffi.RebalanceEvent`).

/** Topics, consumer groups and offset lookups, configured by Kafka-named keys. */
class Admin(config: Map<String, String>) : AutoCloseable {
    constructor(vararg config: Pair<String, String>) : this(mapOf(*config))

    private val inner: NativeAdmin = native { NativeAdmin(config) }

    /** Creates a topic and returns its number of partitions (`replicationFactor` null: the core's default). */
    fun createTopic(name: String, partitions: Int, replicationFactor: Int? = null, configs: Map<String, String> = emptyMap()): Int =
        native { inner.createTopicBlocking(name, partitions, replicationFactor, configs) }

    fun deleteTopic(name: String) = native { inner.deleteTopicBlocking(name) }

    fun listTopics(): List<TopicListing> = native { inner.listTopicsBlocking() }

    /** Partitions with leader, replicas and in-sync replicas, and the topic's configuration. */
    fun describeTopic(name: String): TopicDescription = native { inner.describeTopicBlocking(name) }

    /** Every consumer group of the cluster, sorted by id. */
    fun listGroups(): List<GroupListing> = native { inner.listGroupsBlocking() }

    /** Members with their assignments and committed offsets; an unknown group is [GroupState.DEAD]. */
    fun describeGroup(groupId: String): GroupDescription = native { inner.describeGroupBlocking(groupId) }

    /** Each partition of the group with its owner, committed offset, log end and lag. */
    fun groupLag(groupId: String): List<GroupPartitionLag> = native { inner.groupLagBlocking(groupId) }

    /** Looks offsets up at each partition's leader: one result per entry, in order, failures as typed exceptions. */
    fun listOffsets(queries: List<Pair<TopicPartition, OffsetSpec>>): List<Result<ListedOffset>> =
        native { inner.listOffsetsBlocking(queries.map { (tp, spec) -> OffsetQuery(tp.topic, tp.partition, spec) }) }
            .map { r -> r.listed?.let { Result.success(it) } ?: Result.failure(r.error!!.typed()) }

    /** One partition's offset for `spec` (throws the lookup's typed exception). */
    fun listOffset(partition: TopicPartition, spec: OffsetSpec): ListedOffset =
        listOffsets(listOf(partition to spec)).single().getOrThrow()

    // Suspending twins (as `Consumer.awaitPoll`): they run on the core's runtime and never
    // block the caller's thread, for coroutine code; same results and exceptions.

    suspend fun awaitCreateTopic(name: String, partitions: Int, replicationFactor: Int? = null, configs: Map<String, String> = emptyMap()): Int =
        native { inner.createTopic(name, partitions, replicationFactor, configs) }

    suspend fun awaitDeleteTopic(name: String) = native { inner.deleteTopic(name) }

    suspend fun awaitListTopics(): List<TopicListing> = native { inner.listTopics() }

    suspend fun awaitDescribeTopic(name: String): TopicDescription = native { inner.describeTopic(name) }

    suspend fun awaitListGroups(): List<GroupListing> = native { inner.listGroups() }

    suspend fun awaitDescribeGroup(groupId: String): GroupDescription = native { inner.describeGroup(groupId) }

    suspend fun awaitGroupLag(groupId: String): List<GroupPartitionLag> = native { inner.groupLag(groupId) }

    suspend fun awaitListOffsets(queries: List<Pair<TopicPartition, OffsetSpec>>): List<Result<ListedOffset>> =
        native { inner.listOffsets(queries.map { (tp, spec) -> OffsetQuery(tp.topic, tp.partition, spec) }) }
            .map { r -> r.listed?.let { Result.success(it) } ?: Result.failure(r.error!!.typed()) }

    /** Frees the native handle (the admin client holds no background work). */
    override fun close() = inner.destroy()
}

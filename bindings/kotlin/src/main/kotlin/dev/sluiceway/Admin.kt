// The admin client: a thin layer over the generated `dev.sluiceway.ffi.Admin`.
package dev.sluiceway

import dev.sluiceway.ffi.TopicListing
import dev.sluiceway.ffi.Admin as NativeAdmin

/** Topics (create, delete, list), configured by Kafka-named keys. */
class Admin(config: Map<String, String>) : AutoCloseable {
    constructor(vararg config: Pair<String, String>) : this(mapOf(*config))

    private val inner: NativeAdmin = native { NativeAdmin(config) }

    /** Creates a topic and returns its number of partitions (`replicationFactor` null: the core's default). */
    fun createTopic(name: String, partitions: Int, replicationFactor: Int? = null, configs: Map<String, String> = emptyMap()): Int =
        native { inner.createTopicBlocking(name, partitions, replicationFactor, configs) }

    fun deleteTopic(name: String) = native { inner.deleteTopicBlocking(name) }

    fun listTopics(): List<TopicListing> = native { inner.listTopicsBlocking() }

    /** Frees the native handle (the admin client holds no background work). */
    override fun close() = inner.destroy()
}

// The admin surface against a real broker: topic descriptions, consumer groups (listing,
// members and assignments, committed offsets, lag) and offset lookups, with their errors.
package dev.sluiceway

import dev.sluiceway.ffi.OffsetSpec
import java.time.Duration
import java.util.UUID
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class AdminTest {
    private val bootstrap = TestBroker.address
    private fun admin() = Admin("bootstrap.servers" to bootstrap)
    private fun group(prefix: String) = "$prefix-" + UUID.randomUUID().toString().take(8)

    private fun produce(topic: String, n: Int, partition: Int? = null, timestamp: (Int) -> Long? = { null }) =
        Producer("bootstrap.servers" to bootstrap).use { p ->
            val records = (0 until n).map { ProducerRecord(topic, "v$it".toByteArray(), "k$it".toByteArray(), partition, timestamp(it)) }
            p.sendBatchBlocking(records, Duration.ofSeconds(30)).forEach { it.getOrThrow() }
        }

    /** Polls until `n` records arrived (or 30 s passed) and returns how many did. */
    private fun drain(c: Consumer, n: Int): Int {
        var got = 0
        val deadline = System.nanoTime() + 30_000_000_000
        while (got < n && System.nanoTime() < deadline) got += c.poll(Duration.ofMillis(200)).size
        return got
    }

    @Test
    fun describeTopicGivesPartitionsLeadersReplicasAndConfigs() = admin().use { a ->
        val t = "d-" + UUID.randomUUID().toString().take(8)
        assertEquals(3, a.createTopic(t, 3, configs = mapOf("retention.ms" to "3600000")))
        val d = a.describeTopic(t)
        assertEquals(t, d.name)
        assertEquals(listOf(0, 1, 2), d.partitions.map { it.partition })
        for (p in d.partitions) {
            val leader = assertNotNull(p.leader, "partition ${p.partition} has a leader")
            assertEquals(listOf(leader), p.replicas, "one broker: the leader is the only replica")
            assertEquals(p.replicas, p.isr)
            assertNull(p.error)
        }
        assertEquals("3600000", d.configs["retention.ms"])
        assertEquals("3600000", d.effectiveConfigs["retention.ms"])
        assertTrue(d.effectiveConfigs.size > d.configs.size, "effective configs list the defaults too")

        val e = assertThrows<UnknownTopicOrPartitionException> { a.describeTopic("no-such-topic-describe") }
        assertEquals("UNKNOWN_TOPIC_OR_PARTITION", e.code)
        assertContains(e.message!!, "no-such-topic-describe")
    }

    @Test
    fun suspendingTwinsAnswerLikeTheBlockingOnes() = runBlocking {
        admin().use { a ->
            val t = "s-" + UUID.randomUUID().toString().take(8)
            assertEquals(2, a.awaitCreateTopic(t, 2))
            assertEquals(listOf(0, 1), a.awaitDescribeTopic(t).partitions.map { it.partition })
            assertTrue(a.awaitListTopics().any { it.name == t })
            produce(t, 5, partition = 1)
            val latest = a.awaitListOffsets(listOf(TopicPartition(t, 1) to OffsetSpec.Latest)).single().getOrThrow()
            assertEquals(5L, latest.offset)
            a.awaitListGroups()
            assertEquals(GroupState.DEAD, a.awaitDescribeGroup(group("nobody")).state)
            assertTrue(a.awaitGroupLag(group("nobody")).isEmpty())
            val e = assertThrows<UnknownTopicOrPartitionException> { runBlocking { a.awaitDescribeTopic("no-such-topic-await") } }
            assertContains(e.message!!, "no-such-topic-await")
            a.awaitDeleteTopic(t)
        }
    }

    @Test
    fun listAndDescribeGroupsWithMembersAssignmentsOffsetsAndLag() {
        val t = TestBroker.newTopic(2)
        produce(t, 100)
        val g = group("adm")
        Consumer("bootstrap.servers" to bootstrap, "group.id" to g, "client.id" to "kotlin-admin-test",
            "auto.offset.reset" to "earliest", "enable.auto.commit" to "false").use { c ->
            c.subscribe(listOf(t))
            assertEquals(100, drain(c, 100))
            c.commitSync()
            admin().use { a ->
                val listed = a.listGroups().single { it.groupId == g }
                assertEquals(GroupState.STABLE, listed.state)
                assertEquals(1, listed.members)
                assertTrue(listed.generation >= 1)

                val d = a.describeGroup(g)
                assertEquals(g, d.groupId)
                assertEquals(GroupState.STABLE, d.state)
                assertEquals(listed.generation, d.generation)
                assertNotNull(d.assignor)
                val member = d.members.single()
                assertEquals("kotlin-admin-test", member.clientId)
                assertEquals(listOf(t), member.topics)
                assertEquals(setOf(TopicPartition(t, 0), TopicPartition(t, 1)), member.assignment.toSet())
                assertEquals(listOf(0, 1), d.offsets.map { it.partition })
                assertEquals(100L, d.offsets.sumOf { it.offset!! })
                assertTrue(d.offsets.all { it.topic == t && it.error == null && it.commitTimestamp != null })

                assertTrue(a.groupLag(g).all { it.lag == 0L && it.memberId == member.memberId })
                produce(t, 10, partition = 1)
                val lag = a.groupLag(g).associateBy { it.partition }
                assertEquals(0L, lag.getValue(0).lag)
                assertEquals(10L, lag.getValue(1).lag)
                assertEquals(lag.getValue(1).committed!! + 10, lag.getValue(1).logEndOffset)
                assertEquals("kotlin-admin-test", lag.getValue(1).clientId)
            }
        }
        // After the member left: the group keeps its offsets, with no members.
        admin().use { a ->
            val d = a.describeGroup(g)
            assertEquals(GroupState.EMPTY, d.state)
            assertTrue(d.members.isEmpty())
            assertEquals(100L, d.offsets.sumOf { it.offset!! })
            assertTrue(a.groupLag(g).all { it.memberId == null })
            assertEquals(GroupState.EMPTY, a.listGroups().single { it.groupId == g }.state)
        }
    }

    @Test
    fun unknownAndInvalidGroups() = admin().use { a ->
        // Kafka's rule, kept by the core: a group nobody knows is described as Dead, not an error.
        val dead = a.describeGroup("nobody-" + UUID.randomUUID())
        assertEquals(GroupState.DEAD, dead.state)
        assertTrue(dead.members.isEmpty() && dead.offsets.isEmpty())
        assertNull(dead.assignor)
        assertTrue(a.groupLag(dead.groupId).isEmpty())
        assertTrue(a.listGroups().none { it.groupId == dead.groupId })

        val e = assertThrows<SluicewayException> { a.describeGroup("") }
        assertTrue(e.message!!.isNotEmpty())
        assertContains(e.message!!, "group id")
    }

    @Test
    fun listOffsetsEarliestLatestAndByTimestamp() = admin().use { a ->
        val t = TestBroker.newTopic(2)
        val base = System.currentTimeMillis() - 100_000
        produce(t, 10, partition = 0) { base + it * 10L }
        val p0 = TopicPartition(t, 0)
        val p1 = TopicPartition(t, 1)
        assertEquals(0L, a.listOffset(p0, OffsetSpec.Earliest).offset)
        val latest = a.listOffset(p0, OffsetSpec.Latest)
        assertEquals(10L, latest.offset)
        assertEquals(Triple(t, 0, 10L), Triple(latest.topic, latest.partition, latest.highWatermark))
        assertEquals(0L, latest.logStartOffset)
        assertEquals(5L, a.listOffset(p0, OffsetSpec.Timestamp(base + 50)).offset)
        assertEquals(6L, a.listOffset(p0, OffsetSpec.Timestamp(base + 51)).offset)
        assertNull(a.listOffset(p0, OffsetSpec.Timestamp(base + 1_000_000)).offset, "nothing at or after a future time")
        assertEquals(0L, a.listOffset(p1, OffsetSpec.Latest).offset)

        // One result per query, in order; a failed lookup fails only its own entry.
        val results = a.listOffsets(listOf(
            p0 to OffsetSpec.Latest,
            TopicPartition("no-such-topic-offsets", 0) to OffsetSpec.Earliest,
            TopicPartition(t, 7) to OffsetSpec.Earliest,
            p1 to OffsetSpec.Earliest,
        ))
        assertEquals(10L, results[0].getOrThrow().offset)
        val unknown = results[1].exceptionOrNull()
        assertTrue(unknown is UnknownTopicOrPartitionException, unknown.toString())
        assertContains(unknown.message!!, "no-such-topic-offsets")
        val missing = results[2].exceptionOrNull()
        assertTrue(missing is SluicewayError && missing.message!!.isNotEmpty(), missing.toString())
        assertEquals(0L, results[3].getOrThrow().offset)

        val bad = assertThrows<SluicewayArgumentException> { a.listOffset(TopicPartition(t, -1), OffsetSpec.Latest) }
        assertEquals("INVALID_ARGUMENT", bad.code)
        assertContains(bad.message!!, "partition")
    }
}

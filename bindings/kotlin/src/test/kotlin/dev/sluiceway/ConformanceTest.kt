// The conformance scenarios of docs/CONFORMANCE.md (C1–C16 where the binding exposes them)
// and the Kotlin surface: suspend producer, Flows with rebalance events, typed exceptions.
package dev.sluiceway

import dev.sluiceway.ffi.errorCodes
import dev.sluiceway.ffi.RebalanceEvent
import java.io.File
import java.time.Duration
import java.util.Base64
import java.util.UUID
import kotlin.random.Random
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.long
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class ConformanceTest {
    private val bootstrap = TestBroker.address
    private fun tp(topic: String, partition: Int) = TopicPartition(topic, partition)
    private fun rec(topic: String, value: String, key: String? = null, partition: Int? = null) =
        ProducerRecord(topic, value.toByteArray(), key?.toByteArray(), partition, null)
    private fun group(prefix: String) = "$prefix-" + UUID.randomUUID().toString().take(8)

    /** Polls until `n` records arrived or `seconds` passed. */
    private fun consume(c: Consumer, n: Int, seconds: Long = 30): List<Record> {
        val got = mutableListOf<Record>()
        val deadline = System.nanoTime() + seconds * 1_000_000_000
        while (got.size < n && System.nanoTime() < deadline) got += c.poll(Duration.ofMillis(200))
        return got
    }

    @Test
    fun c1RoundTrip() {
        val t = TestBroker.newTopic(3)
        Producer("bootstrap.servers" to bootstrap, "linger.ms" to "5").use { p ->
            val results = p.sendBatchBlocking((0 until 1000).map { rec(t, "v$it", "k${it % 7}") }, Duration.ofSeconds(30))
            assertTrue(results.all { it.isSuccess })
        }
        Consumer("bootstrap.servers" to bootstrap, "auto.offset.reset" to "earliest").use { c ->
            c.assign((0 until 3).map { tp(t, it) })
            val got = consume(c, 1000)
            assertEquals((0 until 1000).map { "v$it" }.sorted(), got.map { String(it.value!!) }.sorted())
            for ((_, rs) in got.groupBy { it.partition }) {
                val values = rs.map { String(it.value!!).drop(1).toInt() }
                assertEquals(values.sorted(), values)
            }
        }
    }

    @Test
    fun c2KeyToPartition() = runBlocking {
        val t = TestBroker.newTopic(6)
        val keys = listOf("a", "b", "hello", "sluiceway") + (0..9).map { it.toString() }
        Producer("bootstrap.servers" to bootstrap).use { p ->
            for (k in keys) {
                val expected = (murmur2(k.toByteArray()) and 0x7fffffff) % 6
                assertEquals(expected, p.send(t, "x".toByteArray(), key = k.toByteArray()).partition, "key $k")
            }
        }
    }

    @Test
    fun c3ExplicitPartition() = runBlocking {
        val t = TestBroker.newTopic(3)
        val meta = Producer("bootstrap.servers" to bootstrap).use { it.send(rec(t, "to-2", partition = 2)) }
        assertEquals(2, meta.partition)
        assertEquals(t, meta.topic)
        Consumer("bootstrap.servers" to bootstrap, "auto.offset.reset" to "earliest").use { c ->
            c.assign(listOf(tp(t, 2)))
            val r = consume(c, 1).single()
            assertEquals(Triple(2, meta.offset, "to-2"), Triple(r.partition, r.offset, String(r.value!!)))
        }
    }

    @Test
    fun c4GoldenVectorsDecodeToTheJsonBesideEachFile() {
        val dir = File(System.getProperty("sluiceway.golden") ?: error("sluiceway.golden is not set (see pom.xml)"))
        val files = dir.listFiles { f -> f.name.endsWith(".bin") }!!.sortedBy { it.name }
        assertTrue(files.isNotEmpty(), "no golden vectors in $dir")
        fun bytes(e: JsonObject, field: String): String? =
            e[field].takeUnless { it == null || it is JsonNull }?.jsonPrimitive?.content
        for (bin in files) {
            val expected = Json.parseToJsonElement(File(dir, bin.name.removeSuffix(".bin") + ".json").readText())
                .jsonObject.getValue("records").jsonArray.map { it.jsonObject }
            val records = decodeMessageSet(bin.readBytes())
            assertEquals(expected.size, records.size, bin.name)
            for ((r, e) in records.zip(expected)) {
                val what = "${bin.name} offset ${r.offset}"
                assertEquals(e.getValue("offset").jsonPrimitive.long, r.offset, what)
                val ts = e.getValue("timestamp")
                assertEquals(if (ts is JsonNull) -1L else ts.jsonPrimitive.long, r.timestamp, what)
                val type = e.getValue("timestamp_type")
                if (type !is JsonNull) {
                    val name = if (r.timestampType == TimestampType.CREATE_TIME) "CreateTime" else "LogAppendTime"
                    assertEquals(type.jsonPrimitive.content, name, what)
                }
                assertEquals(bytes(e, "key"), r.key?.let { Base64.getEncoder().encodeToString(it) }, "$what key")
                assertEquals(bytes(e, "value"), r.value?.let { Base64.getEncoder().encodeToString(it) }, "$what value")
                // Magic 2 vectors list headers (key, base64 value or null); the others have none.
                val headers = (e["headers"] as? JsonArray ?: JsonArray(emptyList())).map { it.jsonObject }
                assertEquals(
                    headers.map { it.getValue("key").jsonPrimitive.content to bytes(it, "value") },
                    r.headers.map { it.key to it.value?.let { v -> Base64.getEncoder().encodeToString(v) } },
                    "$what headers",
                )
            }
        }
        // A damaged set is a typed error, not a wrong answer.
        val damaged = File(dir, "v1_uncompressed.bin").readBytes().also { it[it.size - 1] = (it[it.size - 1] + 1).toByte() }
        val e = assertThrows<SluicewayException> { decodeMessageSet(damaged) }
        assertEquals("CORRUPT_MESSAGE", e.code)
        assertTrue(e.message!!.isNotEmpty())
    }

    @Test
    fun c5c6LocalOffsetsThenReplay() {
        val t = TestBroker.newTopic(1)
        Producer("bootstrap.servers" to bootstrap).use { p ->
            p.sendBatchBlocking((0 until 1000).map { rec(t, "v$it") }, Duration.ofSeconds(30)).forEach { it.getOrThrow() }
        }
        val cfg = mapOf(
            "bootstrap.servers" to bootstrap, "auto.offset.reset" to "earliest",
            "offset.store.dir" to TestBroker.tempDir().toString(), "max.poll.records" to "100",
        )
        Consumer(cfg).use { c ->
            c.assign(listOf(tp(t, 0)))
            val got = consume(c, 300).take(300)
            assertEquals(299L, got.last().offset)
            c.seek(tp(t, 0), 300)
            c.commitSync()
            assertEquals(300L, c.committed(tp(t, 0)))
        }
        Consumer(cfg).use { c ->
            c.assign(listOf(tp(t, 0)))
            assertEquals(300L, c.position(tp(t, 0)))
            assertEquals(300L, consume(c, 1).first().offset)
            c.seekToBeginning()
            assertEquals(0L, consume(c, 1).first().offset)
        }
    }

    @Test
    fun c7SeekByTime() {
        val t = TestBroker.newTopic(1)
        val base = System.currentTimeMillis() - 100_000
        Producer("bootstrap.servers" to bootstrap).use { p ->
            val records = (0 until 1000).map { ProducerRecord(t, "v$it".toByteArray(), null, null, base + it * 10L) }
            p.sendBatchBlocking(records, Duration.ofSeconds(30)).forEach { it.getOrThrow() }
        }
        Consumer("bootstrap.servers" to bootstrap).use { c ->
            c.assign(listOf(tp(t, 0)))
            c.seekToTimestamp(base + 500 * 10L)
            assertEquals("v500", String(consume(c, 1).first().value!!))
        }
    }

    @Test
    fun c8c9GroupSplitThenBroadcast() {
        val t = TestBroker.newTopic(4)
        Producer("bootstrap.servers" to bootstrap).use { p ->
            p.sendBatchBlocking((0 until 400).map { rec(t, "v$it", "k$it") }, Duration.ofSeconds(30)).forEach { it.getOrThrow() }
        }
        val cfg = mapOf("bootstrap.servers" to bootstrap, "group.id" to group("g"), "auto.offset.reset" to "earliest")
        Consumer(cfg).use { c1 ->
            Consumer(cfg).use { c2 ->
                c1.subscribe(listOf(t))
                c2.subscribe(listOf(t))
                val got = mutableListOf<Record>()
                val deadline = System.nanoTime() + 30_000_000_000
                while (System.nanoTime() < deadline && (got.size < 400 || c1.assignment().isEmpty() || c2.assignment().isEmpty())) {
                    got += c1.poll(Duration.ofMillis(200))
                    got += c2.poll(Duration.ofMillis(200))
                }
                val a1 = c1.assignment().toSet()
                val a2 = c2.assignment().toSet()
                assertTrue(a1.isNotEmpty() && a2.isNotEmpty() && (a1 intersect a2).isEmpty() && (a1 + a2).size == 4, "$a1 $a2")
                assertEquals(400, got.size)
                assertEquals(400, got.map { it.partition to it.offset }.toSet().size)
            }
        }
        Consumer("bootstrap.servers" to bootstrap, "group.id" to group("h"), "auto.offset.reset" to "earliest").use { h ->
            h.subscribe(listOf(t))
            assertEquals(400, consume(h, 400).size)
        }
    }

    @Test
    fun c10TypedErrors() = runBlocking {
        val t = TestBroker.newTopic(3)
        Producer("bootstrap.servers" to bootstrap).use { p ->
            val e = assertThrows<UnknownTopicOrPartitionException> { runBlocking { p.send(rec("no-such-topic-c10", "x")) } }
            assertEquals("UNKNOWN_TOPIC_OR_PARTITION", e.code)
            assertTrue(e.retriable)
            assertContains(e.message!!, "no-such-topic-c10")
        }
        Consumer("bootstrap.servers" to bootstrap).use { c ->
            c.assign(listOf(tp(t, 0)))
            val e = assertThrows<IllegalArgumentException> { c.seek(tp(t, 99), 0) }
            assertEquals("INVALID_ARGUMENT", (e as SluicewayError).code)
            assertThrows<IllegalArgumentException> { c.seek(tp(t, 0), -1) }
        }
        val bad = assertThrows<SluicewayArgumentException> { Producer("bootstrap.servers" to bootstrap, "linger.ms" to "soon") }
        assertEquals("INVALID_CONFIG", bad.code)
        assertContains(bad.message!!, "linger.ms")
        assertContains(assertThrows<SluicewayArgumentException> { Producer("bootstrap.servers" to bootstrap, "no.such.key" to "1") }.message!!, "no.such.key")
    }

    /** Record headers (issue #14): in order, repeated keys and null values kept; a record
     *  without headers beside them. */
    @Test
    fun headersRoundTrip() = runBlocking {
        val t = TestBroker.newTopic(1)
        val headers = listOf(
            RecordHeader("trace", "t1".toByteArray()),
            RecordHeader("null", null),
            RecordHeader("trace", "again".toByteArray()),
        )
        Producer("bootstrap.servers" to bootstrap).use { p ->
            p.send(ProducerRecord(t, "h".toByteArray(), null, 0, null, headers))
            p.send(rec(t, "plain", partition = 0))
        }
        Consumer("bootstrap.servers" to bootstrap, "auto.offset.reset" to "earliest").use { c ->
            c.assign(listOf(tp(t, 0)))
            val got = consume(c, 2)
            assertEquals(
                listOf("trace" to "t1", "null" to null, "trace" to "again"),
                got[0].headers.map { it.key to it.value?.let { v -> String(v) } },
            )
            assertEquals(emptyList<RecordHeader>(), got[1].headers)
        }
    }

    /** `enable.idempotence` (issue #14): offsets dense and in order; Kafka's rules for it enforced
     *  by the core, naming the key. */
    @Test
    fun idempotentProducer() {
        val t = TestBroker.newTopic(1)
        Producer("bootstrap.servers" to bootstrap, "enable.idempotence" to "true").use { p ->
            val sent = p.sendBatchBlocking((0 until 500).map { rec(t, "v$it", partition = 0) }, Duration.ofSeconds(30))
            assertEquals((0L until 500L).toList(), sent.map { it.getOrThrow().offset })
        }
        val bad = assertThrows<SluicewayArgumentException> {
            Producer("bootstrap.servers" to bootstrap, "enable.idempotence" to "true", "acks" to "1")
        }
        assertEquals("INVALID_CONFIG", bad.code)
        assertContains(bad.message!!, "enable.idempotence")
    }

    @Test
    fun c11Compression() {
        val t = TestBroker.newTopic(5)
        for ((i, codec) in listOf("none", "gzip", "snappy", "lz4", "zstd").withIndex()) {
            val values = (0 until 50).map { "$codec-$it-".repeat(20) }
            Producer("bootstrap.servers" to bootstrap, "compression.type" to codec).use { p ->
                p.sendBatchBlocking(values.map { rec(t, it, partition = i) }, Duration.ofSeconds(30)).forEach { it.getOrThrow() }
            }
            Consumer("bootstrap.servers" to bootstrap, "auto.offset.reset" to "earliest").use { c ->
                c.assign(listOf(tp(t, i)))
                assertEquals(values, consume(c, 50).map { String(it.value!!) }, codec)
            }
        }
    }

    @Test
    fun c12LargeValue() = runBlocking {
        val t = TestBroker.newTopic(3)
        val value = Random.nextBytes(1 shl 20)
        Producer("bootstrap.servers" to bootstrap).use { it.send(t, value, partition = 0) }
        Consumer("bootstrap.servers" to bootstrap, "auto.offset.reset" to "earliest").use { c ->
            c.assign(listOf(tp(t, 0)))
            assertTrue(value.contentEquals(consume(c, 1).first().value))
        }
    }

    @Test
    fun c13CloseResolvesEveryPendingSend() {
        val t = TestBroker.newTopic(3)
        val p = Producer("bootstrap.servers" to bootstrap, "linger.ms" to "60000")
        val pending = (0 until 100).map { p.sendBlocking(rec(t, "v$it")) }
        try {
            p.close(Duration.ZERO)
        } catch (e: SluicewayException) {
            // close reports what it could not deliver
        }
        for (d in pending) {
            assertTrue(d.isDone)
            try {
                d.get(Duration.ZERO)
            } catch (e: SluicewayException) {
                assertTrue(e is ClientClosedException, e.toString())
            }
        }
    }

    @Test
    fun c14RebalanceEventsWithOnRevokeCommit() {
        val t = TestBroker.newTopic(4)
        Producer("bootstrap.servers" to bootstrap).use { p ->
            p.sendBatchBlocking((0 until 200).map { rec(t, "v$it", "k$it") }, Duration.ofSeconds(30)).forEach { it.getOrThrow() }
        }
        val cfg = mapOf("bootstrap.servers" to bootstrap, "group.id" to group("r"), "auto.offset.reset" to "earliest", "enable.auto.commit" to "false")
        Consumer(cfg).use { m1 ->
            m1.subscribe(listOf(t))
            val revoked = mutableListOf<RebalanceEvent.Revoked>()
            var got1 = 0
            val deadline1 = System.nanoTime() + 30_000_000_000
            while (got1 < 200 && System.nanoTime() < deadline1) got1 += m1.pollBatch(Duration.ofMillis(200)).records.size
            assertEquals(200, got1)
            assertEquals(4, m1.assignment().size)
            Consumer(cfg).use { m2 ->
                m2.subscribe(listOf(t))
                val assigned2 = mutableListOf<RebalanceEvent.Assigned>()
                val deadline = System.nanoTime() + 30_000_000_000
                while (System.nanoTime() < deadline && (assigned2.isEmpty() || m1.assignment().isEmpty() || m2.assignment().isEmpty())) {
                    for (e in m1.pollBatch(Duration.ofMillis(200)).events) if (e is RebalanceEvent.Revoked) { revoked += e; m1.commitSync() }
                    for (e in m2.pollBatch(Duration.ofMillis(200)).events) if (e is RebalanceEvent.Assigned) assigned2 += e
                }
                assertTrue(revoked.isNotEmpty())
                assertEquals((0 until 4).map { tp(t, it) }.toSet(), revoked[0].positions.map { tp(it.topic, it.partition) }.toSet())
                val ends = revoked[0].positions.associate { tp(it.topic, it.partition) to it.offset }
                assertTrue(assigned2.isNotEmpty())
                for (start in assigned2.last().positions) assertEquals(ends[tp(start.topic, start.partition)], start.offset)
                assertTrue(m1.assignment().isNotEmpty() && m2.assignment().isNotEmpty())
            }
        }
    }

    @Test
    fun c15MissingTopicBatchFailsEveryRecord() {
        val started = System.nanoTime()
        Producer("bootstrap.servers" to bootstrap).use { p ->
            val results = p.sendBatchBlocking((0 until 1000).map { rec("no-such-topic-c15", "x") }, Duration.ofSeconds(60))
            assertEquals(1000, results.size)
            assertTrue(results.all { it.exceptionOrNull() is UnknownTopicOrPartitionException })
        }
        assertTrue(System.nanoTime() - started < 60_000_000_000)
    }

    @Test
    fun c16CloseThenPoll() {
        val t = TestBroker.newTopic(3)
        val c = Consumer("bootstrap.servers" to bootstrap)
        c.assign(listOf(tp(t, 0)))
        c.close()
        val e = assertThrows<ClientClosedException> { c.poll(Duration.ofSeconds(5)) }
        assertContains(e.message!!, "closed")
        assertEquals("CLOSED", e.code)
    }

    @Test
    fun everyErrorCodeMapsToATypedErrorWithAMessage() {
        for (code in errorCodes()) {
            val e = sluicewayException(code.name, "m", code.retriable)
            assertEquals(code.name, (e as SluicewayError).code)
            assertEquals(code.retriable, e.retriable)
            assertEquals("m", e.message)
        }
    }

    @Test
    fun coroutineProducerSends100kMessages() = runBlocking {
        val t = TestBroker.newTopic(3)
        Producer("bootstrap.servers" to bootstrap, "linger.ms" to "5").use { p ->
            val started = System.nanoTime()
            val metas = (0 until 100_000).map { i -> async { p.send(t, "m$i".toByteArray(), key = "k${i % 100}".toByteArray()) } }.awaitAll()
            assertEquals(100_000, metas.size)
            assertTrue(metas.all { it.offset != null })
            println("coroutine producer: 100000 sends in ${(System.nanoTime() - started) / 1_000_000} ms")
        }
        Admin("bootstrap.servers" to bootstrap).use { a -> assertTrue(a.listTopics().any { it.name == t && it.partitions == 3 }) }
    }

    @Test
    fun groupMemberFlowWithRebalanceEvents() = runBlocking {
        val t = TestBroker.newTopic(2)
        Producer("bootstrap.servers" to bootstrap).use { p ->
            p.sendBatch((0 until 20).map { rec(t, "v$it", "k$it") }).forEach { it.getOrThrow() }
        }
        val events = mutableListOf<RebalanceEvent>()
        Consumer("bootstrap.servers" to bootstrap, "group.id" to group("f"), "auto.offset.reset" to "earliest").use { c ->
            c.subscribe(listOf(t))
            val got = withTimeout(30_000) { c.records(Duration.ofMillis(200)) { events += it }.take(20).toList() }
            assertEquals((0 until 20).map { "v$it" }.toSet(), got.map { String(it.value!!) }.toSet())
            c.commit()
        }
        assertTrue(events.any { it is RebalanceEvent.Assigned && it.positions.size == 2 }, events.toString())
    }

    @Test
    fun quickstartExampleRuns() {
        dev.sluiceway.examples.run(bootstrap, TestBroker.tempDir().toString())
    }
}

/** Kafka's Utils.murmur2, for the expected partitions of C2. */
fun murmur2(data: ByteArray): Int {
    val m = 0x5bd1e995
    var h = 0x9747b28c.toInt() xor data.size
    val n4 = data.size / 4
    for (i in 0 until n4) {
        var k = (data[i * 4].toInt() and 0xff) or ((data[i * 4 + 1].toInt() and 0xff) shl 8) or
            ((data[i * 4 + 2].toInt() and 0xff) shl 16) or ((data[i * 4 + 3].toInt() and 0xff) shl 24)
        k *= m
        k = k xor (k ushr 24)
        k *= m
        h *= m
        h = h xor k
    }
    val rest = data.size % 4
    val tail = n4 * 4
    if (rest == 3) h = h xor ((data[tail + 2].toInt() and 0xff) shl 16)
    if (rest >= 2) h = h xor ((data[tail + 1].toInt() and 0xff) shl 8)
    if (rest >= 1) {
        h = h xor (data[tail].toInt() and 0xff)
        h *= m
    }
    h = h xor (h ushr 13)
    h *= m
    h = h xor (h ushr 15)
    return h
}

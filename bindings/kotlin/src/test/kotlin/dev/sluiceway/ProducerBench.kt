// The Kotlin producer's throughput for docs/benchmarks.md (not a test; run by hand):
//   java -cp <test classpath> -Djna.library.path=target/release dev.sluiceway.ProducerBenchKt \
//       HOST:PORT TOPIC SIZE MESSAGES [BATCH]
// Sends MESSAGES values of SIZE bytes in batches of BATCH (default 10,000; one native call each, up to 10
// batches in flight as coroutines), like `sluiceway bench produce --in-flight 10000`-ish.
package dev.sluiceway

import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.sync.Semaphore
import kotlinx.coroutines.sync.withPermit

fun main(args: Array<String>) = runBlocking {
    val (bootstrap, topic) = args
    val size = args[2].toInt()
    val messages = args[3].toInt()
    val batch = args.getOrNull(4)?.toInt() ?: 10_000
    val value = ByteArray(size) { 'x'.code.toByte() }
    val inFlight = Semaphore(10)
    // acks, linger.ms and batch.size as `sluiceway bench produce --acks 1` sets them (its defaults
    // are --linger-ms 5 and --batch-size 65536; the producer's own batch.size default is 16 KiB).
    Producer("bootstrap.servers" to bootstrap, "acks" to "1", "linger.ms" to "5", "batch.size" to "65536").use { p ->
        val started = System.nanoTime()
        val failed = (0 until messages step batch).map { first ->
            async {
                inFlight.withPermit {
                    val records = (first until minOf(first + batch, messages)).map { ProducerRecord(topic, value, null, null, null) }
                    p.sendBatch(records).count { it.isFailure }
                }
            }
        }.awaitAll().sum()
        val seconds = (System.nanoTime() - started) / 1e9
        println("%d messages of %d B in %.2f s: %,.0f messages/s, %.1f MB/s, %d failed".format(
            messages, size, seconds, messages / seconds, messages * size.toDouble() / seconds / 1e6, failed))
    }
}

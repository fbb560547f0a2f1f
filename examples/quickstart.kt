// Sluiceway quickstart (Kotlin), the same steps in every language: create a topic, produce ten
// records, consume and commit them with a local offset store, replay from the beginning.
// Start a broker (`make run`); the Kotlin tests (`make test-kotlin`) run `run` against theirs.
package dev.sluiceway.examples

import dev.sluiceway.Admin
import dev.sluiceway.Consumer
import dev.sluiceway.Producer
import dev.sluiceway.TopicAlreadyExistsException
import dev.sluiceway.TopicPartition
import java.time.Duration
import kotlinx.coroutines.runBlocking

fun main(args: Array<String>) {
    run(args.firstOrNull() ?: "127.0.0.1:9292", System.getProperty("java.io.tmpdir") + "/sluiceway-quickstart")
}

/** The quickstart's steps (the tests run this too). */
fun run(bootstrap: String, store: String) = runBlocking {
    Admin("bootstrap.servers" to bootstrap).use { admin ->
        try {
            admin.createTopic("quickstart", 3)
        } catch (e: TopicAlreadyExistsException) {
            // created by an earlier run
        }
    }

    Producer("bootstrap.servers" to bootstrap).use { producer ->
        val records = (0 until 10).map { dev.sluiceway.ProducerRecord("quickstart", "hello $it".toByteArray(), null, 0, null) }
        for (delivered in producer.sendBatch(records)) {
            println("delivered at offset ${delivered.getOrThrow().offset}")
        }
    }

    Consumer(
        "bootstrap.servers" to bootstrap,
        "auto.offset.reset" to "earliest",
        "enable.auto.commit" to "false",
        "offset.store.dir" to store,
    ).use { consumer ->
        consumer.assign(listOf(TopicPartition("quickstart", 0)))
        var seen = 0
        while (seen < 10) {
            val records = consumer.awaitPoll(Duration.ofSeconds(5))
            check(records.isNotEmpty()) { "no records within 5 s" }
            for (record in records) println("consumed offset ${record.offset}: ${record.value?.let { String(it) }}")
            seen += records.size
        }
        consumer.commit()
        consumer.seekToBeginning()
        val replay = consumer.awaitPoll(Duration.ofSeconds(5))
        println("replayed from offset ${replay.firstOrNull()?.offset ?: error("nothing replayed")}")
    }
}

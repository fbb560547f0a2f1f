// A real `sluiceway broker` process on a free loopback port for the whole test run (as
// broker/tests/support.rs and python/tests/conftest.py start one), and unique topic names.
package dev.sluiceway

import java.nio.file.Files
import java.nio.file.Path
import java.util.UUID
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit

object TestBroker {
    private val dir: Path = Files.createTempDirectory("sluiceway-kotlin-")
    val address: String = startBroker(dir)

    fun newTopic(partitions: Int): String {
        val name = "t-" + UUID.randomUUID().toString().replace("-", "").take(12)
        Admin("bootstrap.servers" to address).use { it.createTopic(name, partitions) }
        return name
    }

    fun tempDir(): Path = Files.createTempDirectory(dir, "store-")
}

/**
 * Starts the broker and returns its address from the "listening on HOST:PORT" line. A top-level
 * function: the reader thread must not touch `TestBroker` while its initializer runs (it would
 * wait on the class-initialization lock).
 */
private fun startBroker(dir: Path): String {
    val binary = System.getProperty("sluiceway.broker") ?: error("sluiceway.broker is not set (see pom.xml)")
    check(Path.of(binary).toFile().canExecute()) { "$binary not found: build it with `cargo build -p sluiceway-broker` (make test-kotlin does)" }
    val log = dir.resolve("broker.log").toFile()
    val process = ProcessBuilder(
        binary, "broker", "--data-dir", dir.resolve("data").toString(), "--listen", "127.0.0.1:0",
        "--group-initial-rebalance-delay-ms", "0",
    ).redirectError(log).start()
    val found = CompletableFuture<String>()
    val stdout = process.inputStream.bufferedReader()
    val reader = Thread {
        while (true) {
            val line = stdout.readLine() ?: break
            if (line.startsWith("listening on ")) found.complete(line.removePrefix("listening on ").trim())
        }
    }
    reader.isDaemon = true
    reader.start()
    Runtime.getRuntime().addShutdownHook(Thread { process.destroy(); process.waitFor(10, TimeUnit.SECONDS) })
    return try {
        found.get(15, TimeUnit.SECONDS)
    } catch (e: Exception) {
        process.destroyForcibly()
        throw IllegalStateException("broker did not start; log:\n${log.readText()}", e)
    }
}

// How the core's threads call back into the JVM.
package dev.sluiceway

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import dev.sluiceway.ffi.uniffiRustFutureContinuationCallbackImpl

/**
 * A suspended call (`send`, `sendBatch`, `awaitPoll`, `commit`, …) is woken by one of the core
 * runtime's threads through a JNA callback. By default JNA attaches that thread to the JVM for
 * each callback and detaches it afterwards, which costs more than the rest of the wake: a
 * profile of the batch producer showed a fifth of its CPU in `AttachCurrentThread` and
 * `DetachCurrentThread`. The runtime's threads are few and live as long as the clients, so they
 * stay attached, as daemon threads (they never keep the JVM alive); JNA detaches each one when
 * it exits.
 */
internal object CallbackThreads {
    init {
        Native.setCallbackThreadInitializer(
            uniffiRustFutureContinuationCallbackImpl,
            CallbackThreadInitializer(true, false, "sluiceway-core"),
        )
    }

    /** Runs the initializer once (the JVM's class initialization makes it thread-safe). */
    fun install() = Unit
}

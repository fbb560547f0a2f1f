// Typed exceptions for the core's errors. The native layer throws one generated
// `dev.sluiceway.ffi.SluicewayException.Failed(code, detail, retriable)`; `native { }` maps it
// once, by the code's name, to the classes below (the code names are the core's stable
// `ErrorCode` names, e.g. UNKNOWN_TOPIC_OR_PARTITION).
package dev.sluiceway

import dev.sluiceway.ffi.ErrorInfo
import dev.sluiceway.ffi.SluicewayException as NativeException

/** What every Sluiceway error carries: the core's error code name and its retry rule. */
interface SluicewayError {
    val code: String
    val retriable: Boolean
}

/** A Sluiceway error; subclasses name the codes applications commonly catch. */
open class SluicewayException(
    override val code: String,
    message: String,
    override val retriable: Boolean,
    cause: Throwable? = null,
) : Exception(message, cause), SluicewayError

class UnknownTopicOrPartitionException(message: String, retriable: Boolean, cause: Throwable?) :
    SluicewayException("UNKNOWN_TOPIC_OR_PARTITION", message, retriable, cause)

class TopicAlreadyExistsException(message: String, retriable: Boolean, cause: Throwable?) :
    SluicewayException("TOPIC_ALREADY_EXISTS", message, retriable, cause)

class OffsetOutOfRangeException(message: String, retriable: Boolean, cause: Throwable?) :
    SluicewayException("OFFSET_OUT_OF_RANGE", message, retriable, cause)

class RequestTimedOutException(message: String, retriable: Boolean, cause: Throwable?) :
    SluicewayException("REQUEST_TIMED_OUT", message, retriable, cause)

/** The client was used after `close()` (CLOSED). */
class ClientClosedException(message: String, retriable: Boolean, cause: Throwable?) :
    SluicewayException("CLOSED", message, retriable, cause)

/**
 * A bad argument or configuration value (INVALID_ARGUMENT, INVALID_CONFIG): Kotlin's own
 * argument error, so `require`-style handlers catch it.
 */
class SluicewayArgumentException(
    override val code: String,
    message: String,
    override val retriable: Boolean,
    cause: Throwable?,
) : IllegalArgumentException(message, cause), SluicewayError

/** The typed exception for a code name and message. */
fun sluicewayException(code: String, message: String, retriable: Boolean, cause: Throwable? = null): Exception =
    when (code) {
        "UNKNOWN_TOPIC_OR_PARTITION" -> UnknownTopicOrPartitionException(message, retriable, cause)
        "TOPIC_ALREADY_EXISTS" -> TopicAlreadyExistsException(message, retriable, cause)
        "OFFSET_OUT_OF_RANGE" -> OffsetOutOfRangeException(message, retriable, cause)
        "REQUEST_TIMED_OUT" -> RequestTimedOutException(message, retriable, cause)
        "CLOSED" -> ClientClosedException(message, retriable, cause)
        "INVALID_ARGUMENT", "INVALID_CONFIG" -> SluicewayArgumentException(code, message, retriable, cause)
        else -> SluicewayException(code, message, retriable, cause)
    }

internal fun NativeException.typed(): Exception = when (this) {
    is NativeException.Failed -> sluicewayException(code, detail, retriable, this)
}

internal fun ErrorInfo.typed(): Exception = sluicewayException(code, message, retriable)

/** Runs a native call, mapping its error to the typed exception (works in suspend code too). */
internal inline fun <T> native(call: () -> T): T =
    try {
        call()
    } catch (e: NativeException) {
        throw e.typed()
    }

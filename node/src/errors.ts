// Errors, mapped once from the native module (`bindings/node/src/lib.rs`, "Errors"):
// a core error becomes a `SluicewayError` whose subclass is chosen by its `ErrorCode` name, with
// `code`, `number`, `retriable` and the native error as `cause`; a bad argument a `TypeError`.
import * as native from '../native/index.js'

/** Every Sluiceway error: `code` is the stable `ErrorCode` name (e.g. `NOT_LEADER`). */
export class SluicewayError extends Error {
  readonly code: string
  readonly number: number
  readonly retriable: boolean
  constructor(code: string, number: number, retriable: boolean, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'SluicewayError'
    this.code = code
    this.number = number
    this.retriable = retriable
  }
}

/** `UNKNOWN_TOPIC_OR_PARTITION` → `UnknownTopicOrPartitionError`. */
function className(code: string): string {
  return (
    code
      .toLowerCase()
      .split('_')
      .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
      .join('') + 'Error'
  )
}

type ErrorClass = new (message: string, retriable: boolean, options?: ErrorOptions) => SluicewayError

/** One subclass per `ErrorCode`, by code name (generated from the core's list of codes). */
export const errorClasses: Record<string, ErrorClass> = {}
const numbers: Record<string, number> = {}
for (const info of native.errorCodes()) {
  const name = className(info.name)
  numbers[info.name] = info.number
  // A named class per code, so `err instanceof NotLeaderError` and stack traces read well.
  const cls = {
    [name]: class extends SluicewayError {
      constructor(message: string, retriable: boolean, options?: ErrorOptions) {
        super(info.name, info.number, retriable, message, options)
        this.name = name
      }
    },
  }[name] as ErrorClass
  errorClasses[info.name] = cls
}

export const UnknownTopicOrPartitionError = errorClasses.UNKNOWN_TOPIC_OR_PARTITION
export const NotLeaderError = errorClasses.NOT_LEADER
export const OffsetOutOfRangeError = errorClasses.OFFSET_OUT_OF_RANGE
export const RequestTimedOutError = errorClasses.REQUEST_TIMED_OUT
export const InvalidConfigError = errorClasses.INVALID_CONFIG
export const InvalidArgumentError = errorClasses.INVALID_ARGUMENT
export const ClosedError = errorClasses.CLOSED
export const TopicAlreadyExistsError = errorClasses.TOPIC_ALREADY_EXISTS
export const RebalanceInProgressError = errorClasses.REBALANCE_IN_PROGRESS
export const MessageTooLargeError = errorClasses.MESSAGE_TOO_LARGE

/** A per-record or per-partition failure object from the native module. */
export function fromInfo(info: native.ErrorInfo): SluicewayError {
  const cls = errorClasses[info.code]
  return cls
    ? new cls(info.message, info.retriable)
    : new SluicewayError(info.code, info.number, info.retriable, info.message)
}

const REASON = /^sluiceway:([A-Z_]+):([01]):([\s\S]*)$/

/** Converts what a native call threw or rejected with. */
export function fromNative(e: unknown): unknown {
  if (!(e instanceof Error)) return e
  const m = REASON.exec(e.message)
  if (m) {
    const [, code, retriable, message] = m
    const cls = errorClasses[code]
    const options = { cause: e }
    return cls
      ? new cls(message, retriable === '1', options)
      : new SluicewayError(code, numbers[code] ?? -1, retriable === '1', message, options)
  }
  // napi's own argument conversion failures (and the binding's `InvalidArg`) carry a status
  // code such as `InvalidArg`, `StringExpected`, `NumberExpected`.
  const status = (e as { code?: unknown }).code
  if (typeof status === 'string' && status !== 'GenericFailure') {
    return new TypeError(e.message, { cause: e })
  }
  return e
}

/** Runs a native call, converting its error. */
export async function call<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f()
  } catch (e) {
    throw fromNative(e)
  }
}

/** The same for a synchronous native call. */
export function callSync<T>(f: () => T): T {
  try {
    return f()
  } catch (e) {
    throw fromNative(e)
  }
}

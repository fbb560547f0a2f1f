// The npm package `sluiceway`: a kafkajs-shaped API over the native module (`../native`, built
// from `bindings/node` by @napi-rs/cli). Architecture rule: this file converts arguments and
// results (strings/Buffers, kafkajs names ↔ Kafka config keys, errors) and dispatches to the
// application's handlers; batching, retries, partitioning, positions, commits and rebalances are
// the Rust core's (`core/src/client/`).
import * as native from '../native/index.js'
import { call, callSync, fromInfo, SluicewayError } from './errors'

export * from './errors'

export type Value = Buffer | string | null
export type ConfigValue = string | number | boolean

export interface SluicewayConfig {
  brokers: string[]
  clientId?: string
  /** Kafka-named configuration passed to the core as is (`'request.timeout.ms': 5000`). */
  [kafkaKey: string]: unknown
}

/**
 * Kafka record headers, as kafkajs takes them: a value per key, or an array of values for a key
 * that repeats (sent in that order); `null`/`undefined` values are null headers.
 */
export interface IHeaders {
  [key: string]: Buffer | string | null | undefined | Array<Buffer | string | null>
}

/** Consumed record headers: `Buffer` values (`null` for a null header); a repeated key's values
 * come as an array, in order. */
export interface IConsumedHeaders {
  [key: string]: Buffer | null | Array<Buffer | null>
}

export interface Message {
  key?: Value
  value: Value
  partition?: number
  /** Create time, ms since the epoch (decimal string or safe integer). */
  timestamp?: string | number
  /** Record headers: the message is written as a magic 2 batch (Kafka's RecordBatch v2). */
  headers?: IHeaders
}

export interface RecordMetadata {
  topic: string
  partition: number
  /** Absent with `acks: 0`. */
  offset?: string
  timestamp: string
}

export interface TopicPartition {
  topic: string
  partition: number
}

export interface TopicPartitionOffset extends TopicPartition {
  offset: string
}

export interface KafkaMessage {
  key: Buffer | null
  value: Buffer | null
  offset: string
  timestamp: string
  timestampType: string
  /** `{}` for a record without headers (all magic 0/1 records). */
  headers: IConsumedHeaders
}

export interface EachMessagePayload {
  topic: string
  partition: number
  message: KafkaMessage
}

export interface Batch {
  topic: string
  partition: number
  messages: KafkaMessage[]
  firstOffset(): string | null
  lastOffset(): string
}

export interface EachBatchPayload {
  batch: Batch
  isRunning(): boolean
}

/** Thrown by `send`/`sendBatch` when a record failed: the first failure, with every outcome. */
export interface DeliveryReport {
  results: Array<RecordMetadata | SluicewayError>
}

// ---------------------------------------------------------------------------------------------
// Argument conversion (a wrong type is a TypeError naming the argument)

function fail(argument: string, expected: string, got: unknown): never {
  throw new TypeError(`${argument}: expected ${expected}, got ${got === null ? 'null' : typeof got}`)
}

function str(argument: string, v: unknown): string {
  if (typeof v !== 'string') fail(argument, 'a string', v)
  return v
}

function uint(argument: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    fail(argument, 'a non-negative integer', v)
  }
  return v
}

function optUint(argument: string, v: unknown): number | undefined {
  return v === undefined || v === null ? undefined : uint(argument, v)
}

function int64(argument: string, v: unknown): string {
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return v
  if (typeof v === 'number' && Number.isSafeInteger(v)) return String(v)
  if (typeof v === 'bigint') return v.toString()
  return fail(argument, 'an integer as a decimal string', v)
}

function bytes(argument: string, v: unknown): Buffer | undefined {
  if (v === null || v === undefined) return undefined
  if (Buffer.isBuffer(v)) return v
  if (typeof v === 'string') return Buffer.from(v)
  return fail(argument, 'a Buffer, a string or null', v)
}

function array(argument: string, v: unknown): unknown[] {
  if (!Array.isArray(v)) fail(argument, 'an array', v)
  return v
}

function obj(argument: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null) fail(argument, 'an object', v)
  return v as Record<string, unknown>
}

function topicPartition(argument: string, v: unknown): native.JsTopicPartition {
  const o = obj(argument, v)
  return { topic: str(`${argument}.topic`, o.topic), partition: uint(`${argument}.partition`, o.partition) }
}

/** Kafka-named keys (those containing a dot) of an options object, as strings. */
function kafkaKeys(argument: string, options: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(options)) {
    if (!k.includes('.')) continue
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      fail(`${argument}['${k}']`, 'a string, number or boolean', v)
    }
    out[k] = String(v)
  }
  return out
}

/** `Symbol.for('nodejs.util.inspect.custom')`: how `console.log` shows the lazy objects below. */
const inspectCustom = Symbol.for('nodejs.util.inspect.custom')

/**
 * An int64 column from the binding: numbers, exact within ±2^53, else the decimal text of every
 * value beside them (split on first use). `i`'s decimal string, or undefined where there is
 * none (an offset column's -1).
 */
function decimal(numbers: Float64Array, text: string | null | undefined, cache: { split?: string[] }, i: number, none: boolean): string | undefined {
  if (text == null) {
    const n = numbers[i]
    return none && n < 0 ? undefined : String(n)
  }
  const s = (cache.split ??= text.split(','))[i]
  return s === '' ? undefined : s
}

/** Where each record's bytes start in a column of lengths (-1: null) laid end to end. */
function starts(lengths: Int32Array): Int32Array {
  const out = new Int32Array(lengths.length)
  let at = 0
  for (let i = 0; i < lengths.length; i++) {
    out[i] = at
    if (lengths[i] > 0) at += lengths[i]
  }
  return out
}

/** One poll's records (the binding's columns), read by the messages made from them. */
class PollRecords {
  private keyStarts?: Int32Array
  private readonly offsetCache: { split?: string[] } = {}
  private readonly timestampCache: { split?: string[] } = {}

  constructor(readonly b: native.JsRecordBatch) {}

  key(i: number): Buffer | null {
    const len = this.b.keyLengths[i]
    if (len < 0) return null
    const at = (this.keyStarts ??= starts(this.b.keyLengths))[i]
    return this.b.keys.subarray(at, at + len)
  }

  value(i: number): Buffer | null {
    const len = this.b.valueLengths[i]
    if (len < 0) return null
    if (len === 0) return Buffer.alloc(0)
    // A view of the fetched bytes themselves (the binding hands them over without a copy).
    const at = this.b.valueStarts[i]
    return this.b.valueBuffers[this.b.valueBuffer[i]].subarray(at, at + len)
  }

  offset(i: number): string {
    return decimal(this.b.offsets, this.b.offsetsText, this.offsetCache, i, false) as string
  }

  timestamp(i: number): string {
    return decimal(this.b.timestamps, this.b.timestampsText, this.timestampCache, i, false) as string
  }

  private headerFirst?: Uint32Array
  private headerValueStarts?: Int32Array

  headers(i: number): IConsumedHeaders {
    const out: IConsumedHeaders = {}
    const counts = this.b.headerCounts
    const keys = this.b.headerKeys
    const values = this.b.headerValues
    const lengths = this.b.headerValueLengths
    if (!counts || !keys || !values || !lengths || counts[i] === 0) return out
    if (!this.headerFirst) {
      this.headerFirst = new Uint32Array(counts.length)
      let at = 0
      for (let r = 0; r < counts.length; r++) {
        this.headerFirst[r] = at
        at += counts[r]
      }
    }
    const at = (this.headerValueStarts ??= starts(lengths))
    const first = this.headerFirst[i]
    for (let h = first; h < first + counts[i]; h++) {
      const len = lengths[h]
      const value = len < 0 ? null : values.subarray(at[h], at[h] + len)
      const key = keys[h]
      const seen = out[key]
      if (seen === undefined) out[key] = value
      else if (Array.isArray(seen)) seen.push(value)
      else out[key] = [seen, value]
    }
    return out
  }
}

/**
 * A consumed message: kafkajs's fields, each made when first read from its poll's columns (so a
 * handler that reads only some fields pays only for those). Keys and values are views of the
 * poll's two Buffers (no copy; a message kept alive keeps its poll's bytes). The fields are
 * getters, so `{ ...message }` copies none of them: `message.toJSON()` gives a plain object.
 */
class PolledMessage implements KafkaMessage {
  #poll: PollRecords
  #i: number
  #key: Buffer | null | undefined = undefined
  #value: Buffer | null | undefined = undefined

  constructor(poll: PollRecords, i: number) {
    this.#poll = poll
    this.#i = i
  }

  get key(): Buffer | null {
    return this.#key === undefined ? (this.#key = this.#poll.key(this.#i)) : this.#key
  }

  set key(k: Buffer | null) {
    this.#key = k
  }

  get value(): Buffer | null {
    return this.#value === undefined ? (this.#value = this.#poll.value(this.#i)) : this.#value
  }

  set value(v: Buffer | null) {
    this.#value = v
  }

  get offset(): string {
    return this.#poll.offset(this.#i)
  }

  get timestamp(): string {
    return this.#poll.timestamp(this.#i)
  }

  get timestampType(): string {
    return this.#poll.b.logAppendTime[this.#i] ? 'LogAppendTime' : 'CreateTime'
  }

  #headers: IConsumedHeaders | undefined = undefined

  get headers(): IConsumedHeaders {
    return (this.#headers ??= this.#poll.headers(this.#i))
  }

  set headers(h: IConsumedHeaders) {
    this.#headers = h
  }

  toJSON(): KafkaMessage {
    return {
      key: this.key,
      value: this.value,
      offset: this.offset,
      timestamp: this.timestamp,
      timestampType: this.timestampType,
      headers: this.headers,
    }
  }

  [inspectCustom](): KafkaMessage {
    return this.toJSON()
  }
}

/** A poll's records as `eachMessage` payloads (`eachMessage`, `poll`, the iterator). */
function payloads(b: native.JsRecordBatch): EachMessagePayload[] {
  const poll = new PollRecords(b)
  const out: EachMessagePayload[] = new Array(b.partitions.length)
  for (let i = 0; i < out.length; i++) {
    out[i] = { topic: b.topics[b.topicIndex[i]], partition: b.partitions[i], message: new PolledMessage(poll, i) }
  }
  return out
}

// ---------------------------------------------------------------------------------------------

/** A native client created on first use; concurrent first calls share the one creation. */
class Lazy<T> {
  private value: T | null = null
  private creating: Promise<T> | null = null

  constructor(private readonly create: () => Promise<T>) {}

  get(): Promise<T> {
    if (this.value) return Promise.resolve(this.value)
    this.creating ??= call(this.create).then((v) => (this.value = v))
    return this.creating
  }

  /** Whether creation has begun (a `disconnect` before any call has nothing to close). */
  get started(): boolean {
    return this.creating !== null
  }

  reset(): void {
    this.value = null
    this.creating = null
  }
}

// ---------------------------------------------------------------------------------------------

export class Sluiceway {
  private readonly base: Record<string, string>

  constructor(config: SluicewayConfig) {
    const c = obj('config', config)
    const brokers = array('config.brokers', c.brokers).map((b, i) => str(`config.brokers[${i}]`, b))
    this.base = { 'bootstrap.servers': brokers.join(','), ...kafkaKeys('config', c) }
    if (c.clientId !== undefined) this.base['client.id'] = str('config.clientId', c.clientId)
  }

  producer(options: ProducerOptions = {}): Producer {
    return new Producer({ ...this.base, ...producerConfig(obj('options', options)) })
  }

  consumer(options: ConsumerOptions = {}): Consumer {
    return new Consumer({ ...this.base, ...consumerConfig(obj('options', options)) })
  }

  admin(): Admin {
    return new Admin({ ...this.base })
  }
}

// ---------------------------------------------------------------------------------------------
// Producer

export interface ProducerOptions {
  /** `-1`/`'all'`, `1` or `0` (the core's `acks`). */
  acks?: number | string
  /** `none`, `gzip`, `snappy`, `lz4`, `zstd` (the core's `compression.type`; see
   * `CompressionTypes`), or kafkajs's numeric code 0–4. */
  compression?: string | number
  /** kafkajs's `idempotent`: the core's `enable.idempotence` (a retried batch is never written
   * twice; needs acks all, which is then the default of every send). */
  idempotent?: boolean
  /** kafkajs's `maxInFlightRequests`: the core's `max.in.flight.requests.per.connection`. */
  maxInFlightRequests?: number
  [kafkaKey: string]: unknown
}

/** kafkajs's `CompressionTypes` names, as the core's `compression.type` values. */
export const CompressionTypes = {
  None: 'none',
  GZIP: 'gzip',
  Snappy: 'snappy',
  LZ4: 'lz4',
  ZSTD: 'zstd',
} as const

/** kafkajs's numeric `CompressionTypes` codes (also the attribute bits of the format). */
const COMPRESSION_CODES = ['none', 'gzip', 'snappy', 'lz4', 'zstd'] as const

/** A codec name, or kafkajs's numeric code (0–4) for code ported from kafkajs. */
function compressionName(argument: string, v: unknown): string {
  if (typeof v === 'number') {
    const name = Number.isInteger(v) ? COMPRESSION_CODES[v] : undefined
    return name ?? fail(argument, "a codec name or kafkajs's CompressionTypes code 0-4", v)
  }
  return str(argument, v)
}

function producerConfig(o: Record<string, unknown>): Record<string, string> {
  const c = kafkaKeys('options', o)
  const acks = optAcks('options.acks', o.acks)
  if (acks !== undefined) c.acks = acks
  if (o.compression !== undefined) c['compression.type'] = compressionName('options.compression', o.compression)
  if (o.idempotent !== undefined) {
    if (typeof o.idempotent !== 'boolean') fail('options.idempotent', 'a boolean', o.idempotent)
    c['enable.idempotence'] = String(o.idempotent)
  }
  if (o.maxInFlightRequests !== undefined) c['max.in.flight.requests.per.connection'] = String(uint('options.maxInFlightRequests', o.maxInFlightRequests))
  return c
}

function optAcks(argument: string, v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' && typeof v !== 'string') fail(argument, "-1, 1, 0 or 'all'", v)
  return String(v)
}

/**
 * `acks` and `compression` of one send (absent: the producer's). The core batches records sent
 * with other settings apart from the rest (a batch has one codec, a request one `acks`), so
 * order holds among records sent with the same settings; with `acks: 0` results carry no
 * `offset`.
 */
export interface ProducerRecord {
  topic: string
  messages: Message[]
  acks?: number | string
  compression?: string | number
}

/** What `send`/`sendBatch` pass on besides the records: per-send settings, parsed by the binding. */
interface SendSettings {
  acks?: string
  compression?: string
}

function sendSettings(argument: string, o: Record<string, unknown>): SendSettings {
  return {
    acks: optAcks(`${argument}.acks`, o.acks),
    compression: o.compression === undefined || o.compression === null ? undefined : compressionName(`${argument}.compression`, o.compression),
  }
}

export class Producer {
  private readonly handle: Lazy<native.NativeProducer>

  constructor(config: Record<string, string>) {
    this.handle = new Lazy(() => native.createProducer(config))
  }

  /** Creates the native producer (validates the config, bootstraps metadata). */
  async connect(): Promise<void> {
    await this.handle.get()
  }

  /** Sends the messages (one native call) and resolves once each is delivered. */
  async send(record: ProducerRecord): Promise<RecordMetadata[]> {
    const r = obj('record', record)
    const settings = sendSettings('record', r)
    const topic = str('record.topic', r.topic)
    return this.sendColumns(columns([{ argument: 'record.messages', topic, messages: r.messages }]), settings)
  }

  /** `send` for several topics, still one native call. */
  async sendBatch(batch: { topicMessages: Array<{ topic: string; messages: Message[] }>; acks?: number | string; compression?: string | number }): Promise<RecordMetadata[]> {
    const b = obj('batch', batch)
    const settings = sendSettings('batch', b)
    const groups = array('batch.topicMessages', b.topicMessages).map((tm, i) => {
      const t = obj(`batch.topicMessages[${i}]`, tm)
      return { argument: `batch.topicMessages[${i}].messages`, topic: str(`batch.topicMessages[${i}].topic`, t.topic), messages: t.messages }
    })
    return this.sendColumns(columns(groups), settings)
  }

  private async sendColumns(cols: native.JsRecordColumns, settings: SendSettings): Promise<RecordMetadata[]> {
    const p = await this.handle.get()
    const d = await call(() => p.send(cols, settings.acks, settings.compression))
    const sent = new SentRecords(d)
    const results: Array<RecordMetadata | SluicewayError> = new Array(d.partitions.length)
    const topicIndex = cols.topicIndex
    for (let i = 0; i < results.length; i++) {
      results[i] = new SentRecord(cols.topics[topicIndex ? topicIndex[i] : 0], d.partitions[i], sent, i)
    }
    for (const e of d.errors) results[e.index] = fromInfo(e.error)
    if (d.errors.length > 0) throw Object.assign(results[d.errors[0].index] as SluicewayError, { results })
    return results as RecordMetadata[]
  }

  /** Delivers everything queued; rejects with a report when records failed or are pending. */
  async flush(options: { timeout?: number } = {}): Promise<void> {
    const t = optUint('options.timeout', obj('options', options).timeout)
    const p = await this.handle.get()
    await call(() => p.flush(t))
  }

  /** Delivers what is queued and closes; every pending send settles. */
  async disconnect(options: { timeout?: number } = {}): Promise<void> {
    const t = optUint('options.timeout', obj('options', options).timeout)
    if (!this.handle.started) return
    const p = await this.handle.get()
    await call(() => p.close(t))
  }
}

/** The outcomes of one send (the binding's columns), read by the `SentRecord`s made from them. */
class SentRecords {
  readonly offsetCache: { split?: string[] } = {}
  readonly timestampCache: { split?: string[] } = {}
  constructor(readonly d: native.JsDeliveries) {}
}

/**
 * Where a sent record landed: `topic` and `partition` are fields, `offset` and `timestamp`
 * getters that make their decimal string when read (so a caller that reads none pays for
 * none); `{ ...result }` copies only the fields, `result.toJSON()` gives all four.
 */
class SentRecord implements RecordMetadata {
  #sent: SentRecords
  #i: number

  constructor(readonly topic: string, readonly partition: number, sent: SentRecords, i: number) {
    this.#sent = sent
    this.#i = i
  }

  get offset(): string | undefined {
    const d = this.#sent.d
    return decimal(d.offsets, d.offsetsText, this.#sent.offsetCache, this.#i, true)
  }

  get timestamp(): string {
    const d = this.#sent.d
    return decimal(d.timestamps, d.timestampsText, this.#sent.timestampCache, this.#i, false) as string
  }

  toJSON(): RecordMetadata {
    return { topic: this.topic, partition: this.partition, offset: this.offset, timestamp: this.timestamp }
  }

  [inspectCustom](): RecordMetadata {
    return this.toJSON()
  }
}

/**
 * The messages of one send in the binding's columns: values (and keys) end to end in one
 * Buffer with their lengths, so the native call reads a few values, not an object per message.
 * The first pass checks the messages and sums the lengths; the second copies the bytes into
 * the one Buffer (no intermediate Buffer per string, no second walk to concatenate).
 */
function columns(groups: Array<{ argument: string; topic: string; messages: unknown }>): native.JsRecordColumns {
  const lists = groups.map((g) => array(g.argument, g.messages))
  let n = 0
  for (const l of lists) n += l.length
  const valueLengths = new Int32Array(n)
  const keyLengths = new Int32Array(n)
  // Each message's value and key as read once (a getter is not asked twice).
  const vs: Array<Buffer | string | undefined> = new Array(n)
  let ks: Array<Buffer | string | undefined> | undefined
  const topicIndex = groups.length > 1 ? new Uint32Array(n) : undefined
  let partitions: Int32Array | undefined
  let timestamps: Array<string | null> | undefined
  let hs: HeaderColumns | undefined
  let valueBytes = 0
  let keyBytes = 0
  let i = 0
  for (let t = 0; t < lists.length; t++) {
    const list = lists[t]
    const argument = groups[t].argument
    for (let j = 0; j < list.length; j++, i++) {
      // An argument's name is built only when a check fails: this runs once per message.
      const m = list[j]
      const o = typeof m === 'object' && m !== null ? (m as Record<string, unknown>) : obj(`${argument}[${j}]`, m)
      const value = o.value
      const vl = byteLength(argument, j, '.value', value)
      valueLengths[i] = vl
      if (vl >= 0) {
        valueBytes += vl
        vs[i] = value as Buffer | string
      }
      const key = o.key
      const kl = byteLength(argument, j, '.key', key)
      keyLengths[i] = kl
      if (kl >= 0) {
        keyBytes += kl
        ;(ks ??= new Array(n))[i] = key as Buffer | string
      }
      if (o.partition !== undefined && o.partition !== null) {
        const p = uint(`${argument}[${j}].partition`, o.partition)
        if (p > 0x7fffffff) fail(`${argument}[${j}].partition`, 'a partition below 2^31', p)
        partitions ??= new Int32Array(n).fill(-1)
        partitions[i] = p
      }
      if (o.timestamp !== undefined && o.timestamp !== null) {
        timestamps ??= new Array<string | null>(n).fill(null)
        timestamps[i] = int64(`${argument}[${j}].timestamp`, o.timestamp)
      }
      if (o.headers !== undefined && o.headers !== null) {
        hs ??= { counts: new Uint32Array(n), keys: [], values: [], lengths: [], bytes: 0 }
        hs.counts[i] = headerColumns(`${argument}[${j}].headers`, o.headers, hs)
      }
      if (topicIndex) topicIndex[i] = t
    }
  }
  const headerLengths = hs && Int32Array.from(hs.lengths)
  return {
    topics: groups.map((g) => g.topic),
    topicIndex,
    partitions,
    values: concat(vs, valueLengths, valueBytes),
    valueLengths,
    keys: ks && concat(ks, keyLengths, keyBytes),
    keyLengths: ks && keyLengths,
    timestamps,
    headerCounts: hs?.counts,
    headerKeys: hs?.keys,
    headerValues: hs && headerLengths && concat(hs.values, headerLengths, hs.bytes),
    headerValueLengths: headerLengths,
  }
}

/** The headers of a send in columns (see `columns`). */
interface HeaderColumns {
  counts: Uint32Array
  keys: string[]
  values: Array<Buffer | string | undefined>
  lengths: number[]
  bytes: number
}

/** Appends one message's headers (kafkajs's `IHeaders`: an array value is a repeated key) to
 * `hs`; returns how many. */
function headerColumns(argument: string, headers: unknown, hs: HeaderColumns): number {
  const o = obj(argument, headers)
  let count = 0
  for (const key of Object.keys(o)) {
    const v = o[key]
    const list = Array.isArray(v) ? v : [v]
    for (let h = 0; h < list.length; h++) {
      const x = list[h]
      const len =
        x === null || x === undefined
          ? -1
          : Buffer.isBuffer(x)
            ? x.length
            : typeof x === 'string'
              ? Buffer.byteLength(x)
              : fail(`${argument}[${JSON.stringify(key)}]`, 'a Buffer, a string or null', x)
      hs.keys.push(key)
      hs.lengths.push(len)
      hs.values.push(len >= 0 ? (x as Buffer | string) : undefined)
      if (len > 0) hs.bytes += len
      count++
    }
  }
  return count
}

/** The bytes a key or value takes (-1: null); anything but a Buffer, a string or null is a
 * TypeError naming `argument[j]field`. */
function byteLength(argument: string, j: number, field: string, v: unknown): number {
  if (v === null || v === undefined) return -1
  if (Buffer.isBuffer(v)) return v.length
  if (typeof v === 'string') return Buffer.byteLength(v)
  return fail(`${argument}[${j}]${field}`, 'a Buffer, a string or null', v)
}

/** `parts` (of `lengths[i]` bytes each, absent for -1) end to end in one new Buffer. */
function concat(parts: Array<Buffer | string | undefined>, lengths: Int32Array, total: number): Buffer {
  const out = Buffer.allocUnsafe(total)
  let at = 0
  for (let i = 0; i < lengths.length; i++) {
    const len = lengths[i]
    if (len < 0) continue
    const p = parts[i] as Buffer | string
    if (typeof p === 'string') out.write(p, at)
    else out.set(p, at)
    at += len
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Consumer

export interface ConsumerOptions {
  /** The consumer group (`group.id`); needed by `subscribe`. */
  groupId?: string
  /** A directory for the local offset store (`offset.store.dir`). */
  offsetStore?: string
  [kafkaKey: string]: unknown
}

function consumerConfig(o: Record<string, unknown>): Record<string, string> {
  const c = kafkaKeys('options', o)
  if (o.groupId !== undefined) c['group.id'] = str('options.groupId', o.groupId)
  if (o.offsetStore !== undefined) c['offset.store.dir'] = str('options.offsetStore', o.offsetStore)
  return c
}

export interface RunOptions {
  eachMessage?: (payload: EachMessagePayload) => Promise<void> | void
  eachBatch?: (payload: EachBatchPayload) => Promise<void> | void
  /** How long one poll waits for records (kafkajs's `maxWaitTimeInMs`); absent: the core's
   * default (`CONSUMER_POLL_TIMEOUT_MS_DEFAULT`, 5 s). */
  maxWaitTimeInMs?: number
}

export type Listener = (payload: any) => unknown

const events = {
  /** Partitions assigned: `{ groupId, memberId, generationId, partitions: [{topic, partition, offset?}] }`. */
  GROUP_JOIN: 'consumer.group_join',
  /** Partitions revoked, with positions: `{ partitions }`. Awaited: commit here to hand over. */
  REBALANCING: 'consumer.rebalancing',
  /** `run`'s handler threw: `{ error }`; the run loop stopped. */
  CRASH: 'consumer.crash',
  /** The consumer was closed. */
  DISCONNECT: 'consumer.disconnect',
} as const

export class Consumer {
  readonly events = events
  private nativeConsumer: native.NativeConsumer | null = null
  private creating: Promise<native.NativeConsumer> | null = null
  private listeners = new Map<string, Listener[]>()
  private running: Promise<void> | null = null
  private stopping = false
  private closed = false

  constructor(private readonly config: Record<string, string>) {}

  /** Nothing to do yet: the native consumer is made by the first subscribe/assign, whose
   * `fromBeginning` becomes `auto.offset.reset` (a core setting). */
  async connect(): Promise<void> {}

  private handle(fromBeginning?: unknown): Promise<native.NativeConsumer> {
    if (this.nativeConsumer) return Promise.resolve(this.nativeConsumer)
    if (this.closed) return Promise.reject(new errorsClosed('the consumer is disconnected', false))
    if (!this.creating) {
      const config = { ...this.config }
      if (fromBeginning !== undefined && config['auto.offset.reset'] === undefined) {
        if (typeof fromBeginning !== 'boolean') fail('fromBeginning', 'a boolean', fromBeginning)
        config['auto.offset.reset'] = fromBeginning ? 'earliest' : 'latest'
      }
      this.creating = call(() => native.createConsumer(config)).then((c) => (this.nativeConsumer = c))
    }
    return this.creating
  }

  private get nc(): native.NativeConsumer {
    if (!this.nativeConsumer) throw new errorsClosed('the consumer has no assignment or subscription yet', false)
    return this.nativeConsumer
  }

  on(event: string, listener: Listener): () => void {
    const ls = this.listeners.get(event) ?? []
    ls.push(listener)
    this.listeners.set(event, ls)
    return () => this.listeners.set(event, (this.listeners.get(event) ?? []).filter((l) => l !== listener))
  }

  private async emit(event: string, payload: unknown): Promise<void> {
    for (const l of this.listeners.get(event) ?? []) await l(payload)
  }

  /** Joins the group `groupId` subscribed to `topics`. */
  async subscribe(s: { topics: string[]; fromBeginning?: boolean } | { topic: string; fromBeginning?: boolean }): Promise<void> {
    const o = obj('subscription', s)
    const topics = o.topics !== undefined
      ? array('subscription.topics', o.topics).map((t, i) => str(`subscription.topics[${i}]`, t))
      : [str('subscription.topic', o.topic)]
    const c = await this.handle(o.fromBeginning)
    await call(() => c.subscribe(topics))
  }

  /** Manual assignment (no group). */
  async assign(a: { partitions: TopicPartition[]; fromBeginning?: boolean }): Promise<void> {
    const o = obj('assignment', a)
    const ps = array('assignment.partitions', o.partitions).map((p, i) => topicPartition(`assignment.partitions[${i}]`, p))
    const c = await this.handle(o.fromBeginning)
    callSync(() => c.assign(ps))
  }

  assignment(): TopicPartition[] {
    return this.nativeConsumer ? this.nativeConsumer.assignment() : []
  }

  /** One poll: records or rebalance events (as the core returns them); `timeout` absent: the
   * core's default wait. */
  async poll(options: { timeout?: number; maxRecords?: number } = {}): Promise<{ messages: EachMessagePayload[]; events: native.JsRebalanceEvent[] }> {
    const o = obj('options', options)
    const timeout = optUint('options.timeout', o.timeout)
    const max = optUint('options.maxRecords', o.maxRecords)
    const c = this.nc
    const b = await nextBatch(c, timeout, max)
    await this.dispatchEvents(b.events)
    return {
      messages: payloads(b.records),
      events: b.events,
    }
  }

  private async dispatchEvents(evs: native.JsRebalanceEvent[]): Promise<void> {
    for (const e of evs) {
      if (e.kind === 'revoked') {
        await this.emit(events.REBALANCING, { partitions: e.partitions })
      } else {
        const m = this.nativeConsumer?.groupMembership()
        await this.emit(events.GROUP_JOIN, {
          groupId: this.config['group.id'],
          memberId: m?.memberId,
          generationId: m?.generation,
          partitions: e.partitions,
        })
      }
    }
  }

  /** Starts dispatching to `eachMessage` or `eachBatch` (per topic-partition); resolves once running. */
  async run(options: RunOptions): Promise<void> {
    const o = obj('options', options)
    if (typeof o.eachMessage !== 'function' && typeof o.eachBatch !== 'function') {
      fail('options.eachMessage', 'a function (or options.eachBatch)', o.eachMessage)
    }
    if (this.running) throw new TypeError('run: the consumer is already running')
    const wait = optUint('options.maxWaitTimeInMs', o.maxWaitTimeInMs)
    const c = this.nc
    this.running = this.loop(c, options, wait)
  }

  private async loop(c: native.NativeConsumer, options: RunOptions, wait: number | undefined): Promise<void> {
    try {
      while (!this.stopping) {
        const b = await nextBatch(c, wait)
        if (this.stopping) break
        await this.dispatchEvents(b.events)
        if (options.eachBatch) {
          for (const batch of batches(b.records)) {
            await options.eachBatch({ batch, isRunning: () => !this.stopping })
          }
        } else if (options.eachMessage) {
          for (const p of payloads(b.records)) await options.eachMessage(p)
        }
      }
    } catch (error) {
      if (!this.stopping) await this.emit(events.CRASH, { error })
    }
  }

  /** `for await (const { topic, partition, message } of consumer)`. */
  async *[Symbol.asyncIterator](): AsyncGenerator<EachMessagePayload> {
    const c = this.nc
    while (!this.stopping) {
      const b = await nextBatch(c)
      await this.dispatchEvents(b.events)
      yield* payloads(b.records)
    }
  }

  seek(s: { topic: string; partition: number; offset: string }): void {
    const o = obj('seek', s)
    const tp = topicPartition('seek', o)
    const offset = int64('seek.offset', o.offset)
    callSync(() => this.nc.seek(tp, offset))
  }

  async seekToBeginning(partitions?: TopicPartition[]): Promise<void> {
    const ps = optPartitions('partitions', partitions)
    const c = this.nc
    await call(() => c.seekToBeginning(ps))
  }

  async seekToEnd(partitions?: TopicPartition[]): Promise<void> {
    const ps = optPartitions('partitions', partitions)
    const c = this.nc
    await call(() => c.seekToEnd(ps))
  }

  /** Every given (default: assigned) partition to the first record at or after `timestamp`. */
  async seekToTimestamp(s: { timestamp: string | number; partitions?: TopicPartition[] }): Promise<void> {
    const o = obj('options', s)
    const ts = int64('options.timestamp', o.timestamp)
    const ps = optPartitions('options.partitions', o.partitions)
    const c = this.nc
    await call(() => c.seekToTimestamp(ps, ts))
  }

  /** kafkajs shape: `[{ topic, partitions?: number[] }]` (no `partitions`: every assigned one). */
  pause(topics: Array<{ topic: string; partitions?: number[] }>): void {
    const ps = this.expand('topics', topics)
    callSync(() => this.nc.pause(ps))
  }

  resume(topics: Array<{ topic: string; partitions?: number[] }>): void {
    const ps = this.expand('topics', topics)
    callSync(() => this.nc.resume(ps))
  }

  paused(): TopicPartition[] {
    return this.nativeConsumer ? this.nativeConsumer.paused() : []
  }

  private expand(argument: string, topics: unknown): native.JsTopicPartition[] {
    const assigned = this.assignment()
    return array(argument, topics).flatMap((t, i) => {
      const o = obj(`${argument}[${i}]`, t)
      const topic = str(`${argument}[${i}].topic`, o.topic)
      if (o.partitions === undefined) return assigned.filter((p) => p.topic === topic)
      return array(`${argument}[${i}].partitions`, o.partitions).map((p, j) => ({
        topic,
        partition: uint(`${argument}[${i}].partitions[${j}]`, p),
      }))
    })
  }

  async position(tp: TopicPartition): Promise<string> {
    const p = topicPartition('partition', tp)
    const c = this.nc
    return call(() => c.position(p))
  }

  /** The locally stored committed offset (`offsetStore`), if any. */
  committed(tp: TopicPartition): string | null {
    return this.nc.committed(topicPartition('partition', tp))
  }

  /** Commits the given offsets (of the next record to read); no argument: every position. */
  async commitOffsets(offsets?: TopicPartitionOffset[]): Promise<void> {
    const c = this.nc
    if (offsets === undefined) {
      await call(() => c.commit())
      return
    }
    const os = array('offsets', offsets).map((x, i) => {
      const o = obj(`offsets[${i}]`, x)
      return { ...topicPartition(`offsets[${i}]`, o), offset: int64(`offsets[${i}].offset`, o.offset) }
    })
    await call(() => c.commitOffsets(os))
  }

  /** Stops `run`, commits (with auto-commit), leaves the group and closes. */
  async disconnect(options: { timeout?: number } = {}): Promise<void> {
    const t = optUint('options.timeout', obj('options', options).timeout)
    this.stopping = true
    this.closed = true
    const c = this.nativeConsumer ?? (this.creating ? await this.creating : null)
    if (c) await call(() => c.close(t))
    if (this.running) await this.running
    await this.emit(events.DISCONNECT, {})
  }

  /** The underlying poll, for tests of close semantics (C16). */
  async pollNative(timeout: number): Promise<native.JsPollBatch> {
    const c = this.nc
    return call(() => c.pollBatch(uint('timeout', timeout)))
  }
}

const errorsClosed = class extends SluicewayError {
  constructor(message: string, retriable: boolean) {
    super('CLOSED', 1002, retriable, message)
    this.name = 'ClosedError'
  }
}

function optPartitions(argument: string, v: unknown): native.JsTopicPartition[] | undefined {
  if (v === undefined || v === null) return undefined
  return array(argument, v).map((p, i) => topicPartition(`${argument}[${i}]`, p))
}

/**
 * The next poll: at once, on this thread, when the core has records fetched and decoded (or
 * events, or an error) — no trip through the core's runtime and back — else the waiting poll.
 * An answer taken at once still yields to the event loop before it is handled, so reading a
 * long backlog never starves timers and I/O.
 */
async function nextBatch(c: native.NativeConsumer, timeout?: number, max?: number): Promise<native.JsPollBatch> {
  const now = callSync(() => c.pollBatchNow(max))
  if (now == null) return call(() => c.pollBatch(timeout, max))
  await new Promise<void>((resolve) => setImmediate(resolve))
  return now
}

/** A poll's records grouped per topic-partition (kafkajs's `eachBatch`), in poll order. */
function batches(b: native.JsRecordBatch): Batch[] {
  const poll = new PollRecords(b)
  const by = new Map<number, { topic: string; partition: number; messages: KafkaMessage[] }>()
  let last = -1
  let current: { topic: string; partition: number; messages: KafkaMessage[] } | undefined
  for (let i = 0; i < b.partitions.length; i++) {
    // A poll returns each partition's records in a run: look the batch up once per run.
    const key = b.topicIndex[i] * 0x100000000 + b.partitions[i]
    if (key !== last || !current) {
      current = by.get(key)
      if (!current) by.set(key, (current = { topic: b.topics[b.topicIndex[i]], partition: b.partitions[i], messages: [] }))
      last = key
    }
    current.messages.push(new PolledMessage(poll, i))
  }
  return [...by.values()].map((b) => ({
    ...b,
    firstOffset: () => b.messages[0]?.offset ?? null,
    lastOffset: () => b.messages[b.messages.length - 1].offset,
  }))
}

// ---------------------------------------------------------------------------------------------
// Admin

export interface ITopicConfig {
  topic: string
  numPartitions: number
  replicationFactor?: number
  configEntries?: Array<{ name: string; value: string }>
}

export class Admin {
  private readonly handle: Lazy<native.NativeAdmin>

  constructor(config: Record<string, string>) {
    this.handle = new Lazy(() => native.createAdmin(config))
  }

  async connect(): Promise<void> {
    await this.handle.get()
  }

  /** Resolves `true` when every topic was created, `false` when one existed (kafkajs). */
  async createTopics(options: { topics: ITopicConfig[] }): Promise<boolean> {
    const ts = array('options.topics', obj('options', options).topics).map((t, i) => {
      const o = obj(`options.topics[${i}]`, t)
      const configs: Record<string, string> = {}
      for (const [j, e] of (o.configEntries === undefined ? [] : array(`options.topics[${i}].configEntries`, o.configEntries)).entries()) {
        const ce = obj(`options.topics[${i}].configEntries[${j}]`, e)
        configs[str(`options.topics[${i}].configEntries[${j}].name`, ce.name)] = str(`options.topics[${i}].configEntries[${j}].value`, ce.value)
      }
      return {
        topic: str(`options.topics[${i}].topic`, o.topic),
        numPartitions: uint(`options.topics[${i}].numPartitions`, o.numPartitions),
        replicationFactor: optUint(`options.topics[${i}].replicationFactor`, o.replicationFactor),
        configs,
      }
    })
    const a = await this.handle.get()
    let created = true
    for (const t of ts) {
      try {
        await call(() => a.createTopic(t))
      } catch (e) {
        if (!(e instanceof SluicewayError && e.code === 'TOPIC_ALREADY_EXISTS')) throw e
        created = false
      }
    }
    return created
  }

  async deleteTopics(options: { topics: string[] }): Promise<void> {
    const ts = array('options.topics', obj('options', options).topics).map((t, i) => str(`options.topics[${i}]`, t))
    const a = await this.handle.get()
    for (const t of ts) await call(() => a.deleteTopic(t))
  }

  async listTopics(): Promise<string[]> {
    const a = await this.handle.get()
    return (await call(() => a.listTopics())).map((t) => t.name)
  }

  async fetchTopicMetadata(options: { topics?: string[] } = {}): Promise<{ topics: native.JsTopicMetadata[] }> {
    const o = obj('options', options)
    const a = await this.handle.get()
    const names = o.topics === undefined
      ? (await call(() => a.listTopics())).map((t) => t.name)
      : array('options.topics', o.topics).map((t, i) => str(`options.topics[${i}]`, t))
    const topics: native.JsTopicMetadata[] = []
    for (const n of names) topics.push(await call(() => a.describeTopic(n)))
    return { topics }
  }

  /** Per partition: `offset` (the high watermark), `high`, `low` (log start). */
  async fetchTopicOffsets(topic: string): Promise<Array<{ partition: number; offset: string; high: string; low: string }>> {
    const name = str('topic', topic)
    const a = await this.handle.get()
    const m = await call(() => a.describeTopic(name))
    const listed = await call(() => a.listOffsets(m.partitions.map((p) => ({ topic: name, partition: p.partitionId, spec: 'latest' }))))
    return listed.map((l) => {
      if (l.error) throw fromInfo(l.error)
      return { partition: l.partition, offset: l.highWatermark as string, high: l.highWatermark as string, low: l.logStartOffset as string }
    })
  }

  /** Per partition, the first offset at or after `timestamp` (absent: none). */
  async fetchTopicOffsetsByTimestamp(topic: string, timestamp: string | number): Promise<Array<{ partition: number; offset: string | null }>> {
    const name = str('topic', topic)
    const ts = int64('timestamp', timestamp)
    const a = await this.handle.get()
    const m = await call(() => a.describeTopic(name))
    const listed = await call(() => a.listOffsets(m.partitions.map((p) => ({ topic: name, partition: p.partitionId, spec: ts }))))
    return listed.map((l) => {
      if (l.error) throw fromInfo(l.error)
      return { partition: l.partition, offset: l.offset ?? null }
    })
  }

  async listGroups(): Promise<{ groups: Array<{ groupId: string; protocolType: string; state: string; members: number }> }> {
    const a = await this.handle.get()
    const gs = await call(() => a.listGroups())
    return { groups: gs.map((g) => ({ groupId: g.groupId, protocolType: 'consumer', state: g.state, members: g.members })) }
  }

  async describeGroups(groupIds: string[]): Promise<{ groups: native.JsGroupDescription[] }> {
    const ids = array('groupIds', groupIds).map((g, i) => str(`groupIds[${i}]`, g))
    const a = await this.handle.get()
    const groups: native.JsGroupDescription[] = []
    for (const id of ids) groups.push(await call(() => a.describeGroup(id)))
    return { groups }
  }

  /** Drops the native client (the admin client holds no background work). */
  async disconnect(): Promise<void> {
    this.handle.reset()
  }
}

/** Decodes a stored message set (conformance C4's golden vectors). */
export function decodeMessageSet(set: Buffer): native.JsDecodedRecord[] {
  if (!Buffer.isBuffer(set)) fail('set', 'a Buffer', set)
  return callSync(() => native.decodeMessageSet(set))
}

/** Every `ErrorCode` the core knows. */
export function errorCodes(): native.ErrorCodeInfo[] {
  return native.errorCodes()
}

export const compressionTypes = (): string[] => native.compressionTypes()

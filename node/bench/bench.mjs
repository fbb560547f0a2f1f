// Producer and consumer throughput from Node.js: the `sluiceway` package against a Sluiceway
// broker, or kafkajs against Apache Kafka, beside the Rust client (`sluiceway bench`) on the
// same workload so the ratio is measured in one run.
//
//   make bench-node                              # release builds + kafkajs, then the runs below
//   node node/bench/bench.mjs --sluiceway target/release/sluiceway --start-broker --size 100
//   node node/bench/bench.mjs --bootstrap 127.0.0.1:9292 --size 1024 --messages 500000 --json
//   node node/bench/bench.mjs --target kafka --bootstrap 127.0.0.1:9092 --size 100 --json
//
// Needs the package built (`cd node && npm run build:native:release && npm run build:ts` for
// figures worth quoting) and, for `--target kafka`, kafkajs (`npm ci --prefix node/bench`).
//
// Each run uses fresh topics of `--partitions` partitions. The producer sends `--batch`
// messages per `send` call (one boundary crossing each) with at most `--window` calls
// unacknowledged; settings acks=1, compression none and, for Sluiceway, linger.ms=5 and
// batch.size=65536 (those of `sluiceway bench` and docs/benchmarks.md). kafkajs has no linger:
// each `send` is its own request per partition leader. The consumer reads the topic back from
// the beginning with `run({ eachBatch })` (Sluiceway: partitions assigned, no group; kafkajs: a
// new group, as kafkajs has no assign) and its time runs from the first record to the last, so
// a group join is not counted (it is printed as `first_record_s`). The consumer runs in a new
// Node process (this script again, `--mode consume --topic T`), as the Rust rows' `sluiceway
// bench consume` does: in the process that has just produced, V8's heap is sized by the
// producer's garbage and its collections cost the consumer 20-30 % (docs/benchmarks.md);
// `--same-process` measures that case. The handler only counts a
// batch's messages; with `--read` it also reads every message's value, key and offset (the
// Sluiceway package makes those when read, kafkajs when it decodes a fetch), as a handler that
// uses its records would. `--no-check-crcs` sets Kafka's `check.crcs=false` on the Sluiceway
// consumers, Node's and the Rust client's (kafkajs checks no CRC either way). With `--sluiceway BIN` the
// Rust client runs the same workload (`BIN bench produce|consume`); `--start-broker` starts a
// broker from BIN in a temp dir for the run and stops it after.
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { resolve } from 'node:path'

const { values: a } = parseArgs({
  options: {
    target: { type: 'string', default: 'sluiceway' },
    bootstrap: { type: 'string', default: '127.0.0.1:9292' },
    size: { type: 'string', default: '100' },
    messages: { type: 'string', default: '1000000' },
    partitions: { type: 'string', default: '4' },
    batch: { type: 'string', default: '1000' },
    window: { type: 'string', default: '32' },
    sluiceway: { type: 'string' },
    'start-broker': { type: 'boolean', default: false },
    read: { type: 'boolean', default: false },
    'no-check-crcs': { type: 'boolean', default: false },
    mode: { type: 'string', default: 'both' },
    topic: { type: 'string' },
    'same-process': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})
if (a.help) {
  console.log('node bench.mjs [--target sluiceway|kafka] [--bootstrap HOST:PORT] [--size B] [--messages N] [--partitions N]\n' +
    '  [--batch N] [--window N] [--sluiceway BIN [--start-broker]] [--read] [--no-check-crcs] [--same-process] [--json]\n' +
    '  [--mode both|consume --topic T]   (see the comment at the top of this file)')
  process.exit(0)
}
const positive = (name) => {
  const n = Number(a[name])
  if (!Number.isSafeInteger(n) || n <= 0) throw new TypeError(`--${name}: expected a positive integer, got ${a[name]}`)
  return n
}
const size = positive('size')
const messages = positive('messages')
const partitions = positive('partitions')
const batch = positive('batch')
const window = positive('window')
if (a.target !== 'sluiceway' && a.target !== 'kafka') throw new TypeError(`--target: expected sluiceway or kafka, got ${a.target}`)
if (a.target === 'kafka' && (a.sluiceway || a['start-broker'])) throw new TypeError('--sluiceway and --start-broker go with --target sluiceway')
if (a['start-broker'] && !a.sluiceway) throw new TypeError('--start-broker needs --sluiceway BIN')
if (a.mode !== 'both' && a.mode !== 'consume') throw new TypeError(`--mode: expected both or consume, got ${a.mode}`)
if ((a.mode === 'consume') !== (a.topic !== undefined)) throw new TypeError('--topic goes with --mode consume, and --mode consume needs --topic')
if (a.mode === 'consume' && (a.sluiceway || a['start-broker'])) throw new TypeError('--mode consume reads a topic of a running broker: no --sluiceway or --start-broker')
if (a['no-check-crcs'] && a.target === 'kafka') throw new TypeError('--no-check-crcs goes with --target sluiceway (kafkajs checks no CRC)')

const run = promisify(execFile)
const suffix = randomBytes(4).toString('hex')

function report(client, mode, seconds, extra = {}) {
  const r = {
    client,
    target: a.target,
    mode,
    size,
    messages,
    seconds: Number(seconds.toFixed(3)),
    msgs_per_sec: Math.round(messages / seconds),
    // `sluiceway bench consume` (the Rust rows) always reads each record's value length and
    // timestamp (for its latency histogram): `--read` is not its to change.
    ...(mode === 'consume' && a.read && client !== 'rust' ? { read: true } : {}),
    ...(mode === 'consume' && a['no-check-crcs'] ? { check_crcs: false } : {}),
    mb_per_sec: Number(((messages * size) / 1e6 / seconds).toFixed(1)),
    ...extra,
  }
  if (a.json) console.log(JSON.stringify(r))
  else console.log(`${client.padEnd(8)} ${mode.padEnd(8)} ${messages} x ${size} B: ${r.msgs_per_sec.toLocaleString('en').padStart(10)} msg/s ${r.mb_per_sec.toFixed(1).padStart(7)} MB/s (${r.seconds} s)`)
}

/** Sends `messages` values in `send` calls of `batch`, at most `window` unacknowledged. */
async function produce(send) {
  const value = Buffer.alloc(size, 'x')
  const full = Array.from({ length: batch }, () => ({ value }))
  const pending = []
  const started = performance.now()
  for (let sent = 0; sent < messages; ) {
    const k = Math.min(batch, messages - sent)
    pending.push(send(k === batch ? full : full.slice(0, k)))
    sent += k
    if (pending.length >= window) await pending.shift()
  }
  await Promise.all(pending)
  return (performance.now() - started) / 1000
}

/** Runs `eachBatch` until `messages` records came; seconds from the first record to the last. */
async function consume(start) {
  let got = 0
  let first = 0
  const started = performance.now()
  let done
  const finished = new Promise((r) => (done = r))
  await start(async (msgs) => {
    if (got === 0) first = performance.now()
    if (a.read) {
      let bytes = 0
      for (const m of msgs) bytes += (m.value?.length ?? 0) + (m.key?.length ?? 0) + m.offset.length
      if (bytes < 0) throw new Error('unreachable: keeps the reads')
    }
    got += msgs.length
    if (got >= messages) done(performance.now())
  })
  const stall = setInterval(() => {
    if (got === 0 && performance.now() - started > 60_000) done(null)
  }, 1000)
  const last = await finished
  clearInterval(stall)
  if (last === null) throw new Error('consume: no record within 60 s')
  return { seconds: (last - first) / 1000, first_record_s: Number(((first - started) / 1000).toFixed(3)) }
}

async function sluiceway(bootstrap) {
  const { Sluiceway } = await import('../dist/index.js')
  const client = new Sluiceway({ brokers: [bootstrap], clientId: 'node-bench' })
  if (a.mode === 'consume') return sluicewayConsume(client, a.topic)
  const admin = client.admin()
  const topic = `nodebench-${size}-${suffix}`
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }] })
  await admin.disconnect()

  const producer = client.producer({ acks: 1, compression: 'none', 'linger.ms': 5, 'batch.size': 65536 })
  await producer.connect()
  report('node', 'produce', await produce((msgs) => producer.send({ topic, messages: msgs })))
  await producer.disconnect()
  if (a['same-process']) await sluicewayConsume(client, topic)
  else await consumeInNewProcess(bootstrap, topic)
}

async function sluicewayConsume(client, topic) {
  const consumer = client.consumer({ 'max.poll.records': 5000, 'enable.auto.commit': false, 'check.crcs': !a['no-check-crcs'] })
  const { seconds, first_record_s } = await consume(async (seen) => {
    await consumer.assign({ partitions: Array.from({ length: partitions }, (_, p) => ({ topic, partition: p })), fromBeginning: true })
    await consumer.run({ eachBatch: async ({ batch: b }) => seen(b.messages) })
  })
  await consumer.disconnect()
  report('node', 'consume', seconds, { first_record_s, ...(a['same-process'] ? { same_process: true } : {}) })
}

/** This script again with `--mode consume`, in a new Node process; its report is printed as is. */
async function consumeInNewProcess(bootstrap, topic) {
  const args = [process.argv[1], '--mode', 'consume', '--topic', topic, '--target', a.target, '--bootstrap', bootstrap,
    '--size', String(size), '--messages', String(messages), '--partitions', String(partitions)]
  if (a.read) args.push('--read')
  if (a['no-check-crcs']) args.push('--no-check-crcs')
  if (a.json) args.push('--json')
  const { stdout } = await run(process.execPath, args, { maxBuffer: 1 << 20 })
  process.stdout.write(stdout)
}

async function rust(bin, bootstrap) {
  const topic = `rustbench-${size}-${suffix}`
  const common = ['--bootstrap', bootstrap, '--topic', topic, '--messages', String(messages), '--format', 'json', '--quiet']
  const modes = {
    produce: ['--size', String(size), '--partitions', String(partitions), '--acks', '1', '--linger-ms', '5', '--batch-size', '65536', '--compression', 'none'],
    consume: a['no-check-crcs'] ? ['--no-check-crcs'] : [],
  }
  for (const [mode, extra] of Object.entries(modes)) {
    const { stdout } = await run(bin, ['bench', mode, ...common, ...extra], { maxBuffer: 1 << 20 })
    const r = JSON.parse(stdout.trim().split('\n').pop())
    if (r.messages !== messages || r.errors !== 0) throw new Error(`rust ${mode}: ${stdout}`)
    report('rust', mode, r.seconds)
  }
}

async function kafkajs(bootstrap) {
  // kafkajs is installed into node/bench/ (`npm ci --prefix node/bench`), not the package.
  const { Kafka, CompressionTypes, logLevel } = createRequire(import.meta.url)('kafkajs')
  const kafka = new Kafka({ brokers: [bootstrap], clientId: 'kafkajs-bench', logLevel: logLevel.NOTHING })
  if (a.mode === 'consume') return kafkajsConsume(kafka, a.topic)
  const topic = `kafkajsbench-${size}-${suffix}`
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true })
  await admin.disconnect()

  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  report('kafkajs', 'produce', await produce((msgs) => producer.send({ topic, acks: 1, compression: CompressionTypes.None, messages: msgs })))
  await producer.disconnect()
  if (a['same-process']) await kafkajsConsume(kafka, topic)
  else await consumeInNewProcess(bootstrap, topic)
}

async function kafkajsConsume(kafka, topic) {
  const consumer = kafka.consumer({ groupId: `kafkajs-bench-${suffix}-${size}`, maxBytesPerPartition: 1 << 20, maxWaitTimeInMs: 100 })
  await consumer.connect()
  const { seconds, first_record_s } = await consume(async (seen) => {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({ autoCommit: false, eachBatch: async ({ batch: b }) => seen(b.messages) })
  })
  await consumer.disconnect()
  report('kafkajs', 'consume', seconds, { first_record_s, ...(a['same-process'] ? { same_process: true } : {}) })
}

let broker = null
try {
  let bootstrap = a.bootstrap
  if (a['start-broker']) {
    const { startBroker } = await import('../test/broker.mjs')
    broker = await startBroker({ bin: resolve(a.sluiceway) })
    bootstrap = broker.address
  }
  if (a.target === 'kafka') {
    await kafkajs(bootstrap)
  } else {
    await sluiceway(bootstrap)
    if (a.sluiceway) await rust(resolve(a.sluiceway), bootstrap)
  }
} finally {
  if (broker) await broker.stop()
}

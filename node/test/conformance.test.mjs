// Conformance scenarios C1–C16 (docs/CONFORMANCE.md) against a real broker.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  Sluiceway, SluicewayError, UnknownTopicOrPartitionError, InvalidConfigError, ClosedError,
  decodeMessageSet, compressionTypes,
} from '../dist/index.js'
import { startBroker, tempDir, collect, repo } from './broker.mjs'

let broker, client, admin
before(async () => {
  broker = await startBroker()
  client = new Sluiceway({ brokers: [broker.address], clientId: 'node-conformance' })
  admin = client.admin()
  await admin.connect()
})
after(async () => {
  await admin.disconnect()
  await broker.stop()
})

async function topic(name, partitions) {
  assert.equal(await admin.createTopics({ topics: [{ topic: name, numPartitions: partitions }] }), true)
}

test('C1 round trip: 1,000 values with keys k0…k6 read back once, in order per partition', async () => {
  await topic('c1', 3)
  const producer = client.producer()
  await producer.connect()
  const messages = Array.from({ length: 1000 }, (_, i) => ({ key: `k${i % 7}`, value: `v${i}` }))
  const meta = await producer.send({ topic: 'c1', messages })
  assert.equal(meta.length, 1000)
  assert.ok(meta.every((m) => typeof m.offset === 'string'))
  await producer.disconnect()
  const consumer = client.consumer()
  await consumer.assign({ partitions: [0, 1, 2].map((p) => ({ topic: 'c1', partition: p })), fromBeginning: true })
  const got = await collect(consumer, 1000)
  assert.equal(got.length, 1000)
  assert.equal(new Set(got.map((m) => m.message.value.toString())).size, 1000)
  for (const p of [0, 1, 2]) {
    const values = got.filter((m) => m.partition === p).map((m) => Number(m.message.value.toString().slice(1)))
    assert.deepEqual(values, [...values].sort((a, b) => a - b), `order in partition ${p}`)
  }
  await consumer.disconnect()
})

/** Kafka's `Utils.murmur2`, bit for bit (checked against Kafka's own test vectors below). */
function murmur2(buf) {
  const m = 0x5bd1e995
  const len = buf.length
  let h = (0x9747b28c ^ len) | 0
  const whole = len & ~3
  for (let i = 0; i < whole; i += 4) {
    let k = buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24)
    k = Math.imul(k, m)
    k ^= k >>> 24
    k = Math.imul(k, m)
    h = Math.imul(h, m) ^ k
  }
  switch (len & 3) {
    case 3: h ^= buf[whole + 2] << 16 // falls through
    case 2: h ^= buf[whole + 1] << 8 // falls through
    case 1: h ^= buf[whole]; h = Math.imul(h, m)
  }
  h ^= h >>> 13
  h = Math.imul(h, m)
  h ^= h >>> 15
  return h | 0
}

test("C2 key → partition: Kafka's murmur2", async () => {
  await topic('c2', 6)
  const producer = client.producer()
  const keys = ['a', 'b', 'hello', 'sluiceway', ...Array.from({ length: 10 }, (_, i) => String(i))]
  const meta = await producer.send({ topic: 'c2', messages: keys.map((k) => ({ key: k, value: 'x' })) })
  // Kafka's DefaultPartitioner, written out independently: toPositive(murmur2(key)) % 6.
  for (const [k, want] of [['21', -973932308], ['foobar', -790332482], ['a-little-bit-long-string', -985981536], ['abc', 479470107]]) {
    assert.equal(murmur2(Buffer.from(k)), want, `murmur2(${k})`)
  }
  keys.forEach((k, i) => assert.equal(meta[i].partition, (murmur2(Buffer.from(k)) & 0x7fffffff) % 6, `key ${k}`))
  await producer.disconnect()
})

test('C3 explicit partition', async () => {
  await topic('c3', 4)
  const producer = client.producer()
  const [m] = await producer.send({ topic: 'c3', messages: [{ value: 'to two', partition: 2 }] })
  assert.equal(m.partition, 2)
  await producer.disconnect()
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'c3', partition: 2 }], fromBeginning: true })
  const [got] = await collect(consumer, 1)
  assert.equal(got.partition, 2)
  assert.equal(got.message.value.toString(), 'to two')
  assert.equal(got.message.offset, m.offset)
  await consumer.disconnect()
})

test('C4 golden vectors decode to the JSON beside each file', () => {
  const dir = join(repo, 'testdata', 'golden')
  const files = readdirSync(dir).filter((f) => f.endsWith('.bin'))
  assert.ok(files.length > 0)
  for (const f of files) {
    const expected = JSON.parse(readFileSync(join(dir, f.replace(/\.bin$/, '.json')), 'utf8'))
    const records = decodeMessageSet(readFileSync(join(dir, f)))
    assert.equal(records.length, expected.records.length, f)
    records.forEach((r, i) => {
      const e = expected.records[i]
      assert.equal(r.offset, String(e.offset), `${f} offset`)
      assert.equal(r.timestamp, e.timestamp === null ? '-1' : String(e.timestamp), `${f} timestamp`)
      if (e.timestamp_type !== null) assert.equal(r.timestampType, e.timestamp_type, `${f} timestamp type`)
      assert.equal(r.key === null || r.key === undefined ? null : r.key.toString('base64'), e.key, `${f} key`)
      assert.equal(r.value === null || r.value === undefined ? null : r.value.toString('base64'), e.value, `${f} value`)
      // Magic 2 vectors list headers, in order; magic 0/1 records have none.
      const headers = r.headers.map((h) => [h.key, h.value === null || h.value === undefined ? null : h.value.toString('base64')])
      assert.deepEqual(headers, (e.headers ?? []).map((h) => [h.key, h.value]), `${f} headers`)
    })
  }
})

test('C5 + C6 local offsets resume at 300, then replay from the beginning', async () => {
  await topic('c5', 1)
  const producer = client.producer()
  await producer.send({ topic: 'c5', messages: Array.from({ length: 1000 }, (_, i) => ({ value: `v${i}` })) })
  await producer.disconnect()
  const store = tempDir()
  const tp = { topic: 'c5', partition: 0 }
  const first = client.consumer({ offsetStore: store, 'enable.auto.commit': false })
  await first.assign({ partitions: [tp], fromBeginning: true })
  const got = []
  while (got.length < 300) {
    const { messages } = await first.poll({ timeout: 1000, maxRecords: 300 - got.length })
    got.push(...messages)
  }
  assert.equal(got.at(-1).message.offset, '299')
  await first.commitOffsets([{ ...tp, offset: '300' }])
  await first.disconnect()

  const second = client.consumer({ offsetStore: store, 'enable.auto.commit': false })
  await second.assign({ partitions: [tp], fromBeginning: true })
  assert.equal(second.committed(tp), '300')
  const [next] = await collect(second, 1)
  assert.equal(next.message.offset, '300')
  // C6
  await second.seekToBeginning()
  const [again] = (await collect(second, 1))
  assert.equal(again.message.offset, '0')
  await second.disconnect()
})

test('C7 seek by time: the first record is the 501st', async () => {
  await topic('c7', 1)
  const producer = client.producer()
  const base = Date.now() - 100_000
  await producer.send({ topic: 'c7', messages: Array.from({ length: 500 }, (_, i) => ({ value: `a${i}`, timestamp: String(base) })) })
  const T = base + 1000
  await producer.send({ topic: 'c7', messages: Array.from({ length: 500 }, (_, i) => ({ value: `b${i}`, timestamp: String(T) })) })
  await producer.disconnect()
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'c7', partition: 0 }], fromBeginning: true })
  await consumer.seekToTimestamp({ timestamp: String(T) })
  const [m] = await collect(consumer, 1)
  assert.equal(m.message.offset, '500')
  assert.equal(m.message.value.toString(), 'b0')
  await consumer.disconnect()
})

async function runUntil(consumer, total, seen, ms = 20000) {
  const deadline = Date.now() + ms
  while (seen.length < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
}

test('C8 + C9 group split, then broadcast to another group', async (t) => {
  await topic('c8', 4)
  const producer = client.producer()
  await producer.send({ topic: 'c8', messages: Array.from({ length: 400 }, (_, i) => ({ key: `k${i}`, value: `v${i}` })) })
  await producer.disconnect()
  const seen = []
  const members = [client.consumer({ groupId: 'g' }), client.consumer({ groupId: 'g' })]
  t.after(() => Promise.all(members.map((c) => c.disconnect().catch(() => {}))))
  const owned = [new Set(), new Set()]
  for (const [i, c] of members.entries()) {
    await c.subscribe({ topics: ['c8'], fromBeginning: true })
    await c.run({ maxWaitTimeInMs: 200, eachMessage: async ({ partition, message }) => { owned[i].add(partition); seen.push(message.value.toString()) } })
  }
  const deadline = Date.now() + 20000
  while ((seen.length < 400 || members.some((c) => c.assignment().length === 0)) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50))
  }
  assert.equal(seen.length, 400)
  assert.equal(new Set(seen).size, 400)
  // Each member ends up with a disjoint, non-empty share of the 4 partitions.
  const assignments = members.map((c) => c.assignment().map((p) => p.partition))
  assert.ok(assignments.every((a) => a.length > 0), JSON.stringify(assignments))
  assert.equal(new Set(assignments.flat()).size, 4)
  for (const c of members) await c.disconnect()

  const h = client.consumer({ groupId: 'h' })
  t.after(() => h.disconnect().catch(() => {}))
  await h.subscribe({ topics: ['c8'], fromBeginning: true })
  const again = []
  await h.run({ maxWaitTimeInMs: 200, eachMessage: async ({ message }) => { again.push(message.value.toString()) } })
  await runUntil(null, 400, again)
  assert.equal(new Set(again).size, 400)
  await h.disconnect()
})

test('C10 typed errors', async () => {
  const producer = client.producer()
  await assert.rejects(producer.send({ topic: 'missing-c10', messages: [{ value: 'x' }] }), (e) => {
    assert.ok(e instanceof UnknownTopicOrPartitionError)
    assert.ok(e instanceof SluicewayError)
    assert.equal(e.code, 'UNKNOWN_TOPIC_OR_PARTITION')
    assert.equal(e.retriable, true)
    assert.match(e.message, /missing-c10/)
    return true
  })
  await producer.disconnect()
  await topic('c10', 1)
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'c10', partition: 0 }] })
  assert.throws(() => consumer.seek({ topic: 'c10', partition: 7, offset: '0' }), (e) => {
    assert.ok(e instanceof SluicewayError)
    assert.match(e.code, /INVALID_ARGUMENT|UNKNOWN_TOPIC_OR_PARTITION/)
    return true
  })
  await consumer.disconnect()
  const bad = new Sluiceway({ brokers: [broker.address], 'request.timeout.ms': 'soon' }).producer()
  await assert.rejects(bad.connect(), (e) => {
    assert.ok(e instanceof InvalidConfigError)
    assert.equal(e.code, 'INVALID_CONFIG')
    assert.match(e.message, /request\.timeout\.ms/)
    return true
  })
  // Bad arguments are the language's own argument error, naming the argument.
  const p = client.producer()
  await assert.rejects(p.send({ topic: 'c10', messages: [{ value: 42 }] }), (e) => e instanceof TypeError && /messages\[0\]\.value/.test(e.message))
  await assert.rejects(p.send({ topic: 3, messages: [] }), (e) => e instanceof TypeError && /record\.topic/.test(e.message))
  assert.throws(() => new Sluiceway({ brokers: 'x' }), (e) => e instanceof TypeError && /config\.brokers/.test(e.message))
  await p.disconnect()
})

test('C11 compression: every codec reads back identical values', async () => {
  await topic('c11', 1)
  const values = Array.from({ length: 50 }, (_, i) => `value ${i} `.repeat(20))
  for (const codec of compressionTypes()) {
    const producer = client.producer({ compression: codec })
    await producer.send({ topic: 'c11', compression: codec, messages: values.map((v) => ({ value: `${codec}:${v}` })) })
    await producer.disconnect()
  }
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'c11', partition: 0 }], fromBeginning: true })
  const got = await collect(consumer, 50 * compressionTypes().length)
  for (const codec of compressionTypes()) {
    assert.deepEqual(got.map((m) => m.message.value.toString()).filter((v) => v.startsWith(`${codec}:`)), values.map((v) => `${codec}:${v}`), codec)
  }
  await consumer.disconnect()
})

test('C12 large value: 1 MiB byte-identical', async () => {
  await topic('c12', 1)
  const value = Buffer.alloc(1 << 20)
  for (let i = 0; i < value.length; i++) value[i] = (i * 31 + 7) & 0xff
  const producer = client.producer()
  await producer.send({ topic: 'c12', messages: [{ value }] })
  await producer.disconnect()
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'c12', partition: 0 }], fromBeginning: true })
  const [m] = await collect(consumer, 1)
  assert.ok(m.message.value.equals(value))
  await consumer.disconnect()
})

test('C13 close semantics: every pending send settles', async () => {
  await topic('c13', 2)
  const producer = client.producer({ 'linger.ms': 1000 })
  await producer.connect()
  const sends = Array.from({ length: 20 }, (_, i) => producer.send({ topic: 'c13', messages: [{ value: `p${i}` }] }))
  const closing = producer.disconnect({ timeout: 5000 })
  const settled = await Promise.allSettled(sends)
  await closing.catch(() => {})
  assert.equal(settled.length, 20)
  for (const s of settled) {
    if (s.status === 'rejected') assert.ok(s.reason instanceof SluicewayError)
  }
  // After close, a send is CLOSED.
  await assert.rejects(producer.send({ topic: 'c13', messages: [{ value: 'late' }] }), (e) => e instanceof ClosedError)
})

test('C14 rebalance events: revoke with positions and a commit, then assign at those commits', async (t) => {
  await topic('c14', 4)
  const producer = client.producer()
  await producer.send({ topic: 'c14', messages: Array.from({ length: 200 }, (_, i) => ({ partition: i % 4, value: `v${i}` })) })
  const one = client.consumer({ groupId: 'r', 'enable.auto.commit': false })
  t.after(() => one.disconnect().catch(() => {}))
  const log = []
  let revokedPositions = null
  one.on(one.events.GROUP_JOIN, (e) => log.push(['one-assigned', e.partitions.length]))
  one.on(one.events.REBALANCING, async (e) => {
    revokedPositions = e.partitions
    log.push(['one-revoked', e.partitions.length])
    await one.commitOffsets() // commits the revoked positions before they move
  })
  await one.subscribe({ topics: ['c14'], fromBeginning: true })
  const seenOne = []
  await one.run({ maxWaitTimeInMs: 200, eachMessage: async ({ message }) => { seenOne.push(message.offset) } })
  await runUntil(null, 200, seenOne)
  assert.equal(seenOne.length, 200)
  assert.equal(one.assignment().length, 4)

  const two = client.consumer({ groupId: 'r', 'enable.auto.commit': false })
  t.after(() => two.disconnect().catch(() => {}))
  let assignedTwo = null
  two.on(two.events.GROUP_JOIN, (e) => { assignedTwo = e.partitions })
  await two.subscribe({ topics: ['c14'], fromBeginning: true })
  const seenTwo = []
  await two.run({ maxWaitTimeInMs: 200, eachMessage: async (m) => { seenTwo.push(m) } })
  const deadline = Date.now() + 20000
  while ((!assignedTwo || one.assignment().length === 4 || one.assignment().length === 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50))
  }
  assert.ok(revokedPositions, 'member one saw a revoke')
  assert.equal(revokedPositions.length, 4)
  assert.ok(revokedPositions.every((p) => p.offset === '50'), JSON.stringify(revokedPositions))
  assert.ok(assignedTwo && assignedTwo.length > 0, 'member two got an assignment')
  for (const p of assignedTwo) assert.equal(p.offset, '50', 'member two starts at the commits')
  assert.equal(seenTwo.length, 0, 'nothing re-delivered')
  assert.equal(one.assignment().length + two.assignment().length, 4)
  assert.ok(log.findIndex((l) => l[0] === 'one-revoked') > log.findIndex((l) => l[0] === 'one-assigned'))
  await one.disconnect()
  await two.disconnect()
  await producer.disconnect()
})

test('C15 missing topic: a batch of 1,000 fails record by record, quickly', async () => {
  const producer = client.producer({ 'max.block.ms': 5000 })
  await producer.connect()
  const started = Date.now()
  const err = await producer.send({ topic: 'missing-c15', messages: Array.from({ length: 1000 }, (_, i) => ({ value: `v${i}` })) }).then(() => null, (e) => e)
  assert.ok(err instanceof UnknownTopicOrPartitionError)
  assert.equal(err.results.length, 1000)
  assert.ok(err.results.every((r) => r instanceof UnknownTopicOrPartitionError))
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`)
  await producer.disconnect()
})

test('C16 close and reuse: poll after disconnect is CLOSED, no hang', async () => {
  await topic('c16', 1)
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'c16', partition: 0 }] })
  await consumer.disconnect()
  await assert.rejects(consumer.pollNative(1000), (e) => e instanceof ClosedError && e.code === 'CLOSED' && /close/i.test(e.message))
})

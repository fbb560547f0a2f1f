// The binding surface beyond the conformance scenarios: large batches, eachBatch, the async
// iterator, pause/resume, admin, error classes, the event loop, process exit, the quickstart.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { join } from 'node:path'
import { Sluiceway, SluicewayError, CompressionTypes, errorClasses, errorCodes } from '../dist/index.js'
import { startBroker, collect, repo, tempDir } from './broker.mjs'

const run = promisify(execFile)
let broker, client, admin
before(async () => {
  broker = await startBroker()
  client = new Sluiceway({ brokers: [broker.address], clientId: 'node-client' })
  admin = client.admin()
})
after(async () => {
  await admin.disconnect()
  await broker.stop()
})

test('every ErrorCode has its SluicewayError subclass', () => {
  for (const c of errorCodes()) {
    const cls = errorClasses[c.name]
    assert.ok(cls, c.name)
    const e = new cls('m', c.retriable)
    assert.ok(e instanceof SluicewayError)
    assert.equal(e.code, c.name)
    assert.equal(e.number, c.number)
  }
})

test('a batch of 10,000 crosses in one send and reads back with eachBatch', async () => {
  await admin.createTopics({ topics: [{ topic: 'big', numPartitions: 2 }] })
  const producer = client.producer()
  const meta = await producer.send({ topic: 'big', messages: Array.from({ length: 10000 }, (_, i) => ({ key: `k${i}`, value: `v${i}` })) })
  assert.equal(meta.length, 10000)
  await producer.sendBatch({ topicMessages: [{ topic: 'big', messages: Array.from({ length: 10000 }, (_, i) => ({ value: `w${i}` })) }] })
  await producer.disconnect()
  const consumer = client.consumer({ groupId: 'batches' })
  await consumer.subscribe({ topics: ['big'], fromBeginning: true })
  let count = 0
  let batches = 0
  await consumer.run({
    maxWaitTimeInMs: 200,
    eachBatch: async ({ batch }) => {
      batches++
      assert.equal(batch.firstOffset(), batch.messages[0].offset)
      count += batch.messages.length
    },
  })
  const deadline = Date.now() + 30000
  while (count < 20000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  assert.equal(count, 20000)
  assert.ok(batches > 1)
  await consumer.disconnect()
})

test('the values and keys of many sends in flight at once read back byte for byte', async () => {
  // A send's values cross in one Buffer that its records share until the core has batched
  // them: with 40 sends in flight, their own Buffers overwritten and garbage made meanwhile,
  // every byte must still come back.
  await admin.createTopics({ topics: [{ topic: 'shared', numPartitions: 3 }] })
  const producer = client.producer({ 'linger.ms': 20 })
  const sends = []
  const expected = new Map()
  for (let s = 0; s < 40; s++) {
    const messages = Array.from({ length: 100 }, (_, i) => {
      const value = Buffer.alloc(64 + ((s * 100 + i) % 700))
      for (let b = 0; b < value.length; b++) value[b] = (s * 31 + i * 7 + b) & 0xff
      const key = `k${s}-${i}`
      expected.set(key, Buffer.from(value))
      return { key, value }
    })
    sends.push(producer.send({ topic: 'shared', messages }))
    for (const m of messages) m.value.fill(0)
    Array.from({ length: 2000 }, (_, i) => ({ i, s: 'garbage' + i }))
  }
  const results = await Promise.all(sends)
  assert.equal(results.flat().length, 4000)
  await producer.disconnect()
  const consumer = client.consumer({ 'max.poll.records': 500 })
  await consumer.assign({ partitions: [0, 1, 2].map((partition) => ({ topic: 'shared', partition })), fromBeginning: true })
  const got = await collect(consumer, 4000, 30000)
  assert.equal(got.length, 4000)
  for (const { message } of got) {
    const key = message.key.toString()
    const want = expected.get(key)
    assert.ok(want, `unexpected key ${key}`)
    assert.ok(message.value.equals(want), `value of ${key} differs`)
    expected.delete(key)
  }
  assert.equal(expected.size, 0)
  await consumer.disconnect()
})

test("Kafka's check.crcs passes through: false reads every codec back whole; a bad value is INVALID_CONFIG", async () => {
  await admin.createTopics({ topics: [{ topic: 'nocrc', numPartitions: 1 }] })
  const producer = client.producer({ acks: 1 })
  const want = []
  for (const compression of Object.values(CompressionTypes)) {
    const messages = Array.from({ length: 10 }, (_, i) => ({ key: `${compression}-${i}`, value: `v-${compression}-${i}` }))
    await producer.send({ topic: 'nocrc', compression, messages })
    want.push(...messages.map((m) => m.value))
  }
  await producer.disconnect()
  const consumer = client.consumer({ 'check.crcs': false })
  await consumer.assign({ partitions: [{ topic: 'nocrc', partition: 0 }], fromBeginning: true })
  const got = await collect(consumer, want.length)
  assert.deepEqual(got.map(({ message }) => message.value.toString()), want)
  await consumer.disconnect()
  // The native consumer (and so the config check) comes with the first assign or subscribe.
  const refused = client.consumer({ 'check.crcs': 'sometimes' })
  await assert.rejects(refused.assign({ partitions: [{ topic: 'nocrc', partition: 0 }] }), (e) => e instanceof SluicewayError && e.code === 'INVALID_CONFIG' && /check\.crcs/.test(e.message))
})

test('per-send acks (0, 1, -1) and every codec through one producer, read back whole and in order', async () => {
  await admin.createTopics({ topics: [{ topic: 'persend', numPartitions: 1 }] })
  const producer = client.producer({ acks: 1, compression: CompressionTypes.GZIP })
  const tags = []
  const sends = []
  for (const acks of [0, 1, -1, 'all', undefined]) {
    for (const compression of [...Object.values(CompressionTypes), undefined]) {
      const tag = `${acks}-${compression}`
      tags.push(tag)
      const messages = Array.from({ length: 20 }, (_, i) => ({ value: `${tag}-${String(i).padStart(2, '0')}-${'z'.repeat(i)}` }))
      // All in flight at once: the core batches each setting apart.
      sends.push(i => i % 2 === 0
        ? producer.send({ topic: 'persend', acks, compression, messages })
        : producer.sendBatch({ acks, compression, topicMessages: [{ topic: 'persend', messages }] }))
    }
  }
  const results = await Promise.all(sends.map((s, i) => s(i)))
  const offsets = new Set()
  results.forEach((rs, i) => {
    assert.equal(rs.length, 20)
    for (const r of rs) {
      if (tags[i].startsWith('0-')) assert.equal(r.offset, undefined, tags[i])
      else offsets.add(r.offset)
    }
  })
  assert.equal(offsets.size, (tags.length - 6) * 20, 'each acked record its own offset')
  await producer.disconnect()
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'persend', partition: 0 }], fromBeginning: true })
  const got = await collect(consumer, tags.length * 20)
  await consumer.disconnect()
  const byTag = new Map()
  for (const { message } of got) {
    const v = message.value.toString()
    const tag = v.split('-').slice(0, -2).join('-')
    byTag.set(tag, [...(byTag.get(tag) ?? []), v])
  }
  assert.deepEqual([...byTag.keys()].sort(), [...tags].sort())
  for (const [tag, values] of byTag) {
    assert.deepEqual(values, Array.from({ length: 20 }, (_, i) => `${tag}-${String(i).padStart(2, '0')}-${'z'.repeat(i)}`), tag)
  }
})

test('int64 timestamps beyond 2^53 come back exact from send and from a poll; messages are lazy but complete', async () => {
  await admin.createTopics({ topics: [{ topic: 'int64', numPartitions: 1 }] })
  const stamps = ['9007199254740993', '-9007199254740993', '1733300000000', '-1', '9223372036854775807']
  const producer = client.producer()
  const sent = await producer.send({ topic: 'int64', messages: stamps.map((timestamp, i) => ({ key: i % 2 ? null : `k${i}`, value: `v${i}`, timestamp })) })
  await producer.disconnect()
  assert.deepEqual(sent.map((r) => r.timestamp), stamps)
  assert.deepEqual(sent.map((r) => r.offset), ['0', '1', '2', '3', '4'])
  assert.deepEqual(sent.map((r) => r.toJSON()), stamps.map((timestamp, i) => ({ topic: 'int64', partition: 0, offset: String(i), timestamp })))
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'int64', partition: 0 }], fromBeginning: true })
  const got = await collect(consumer, stamps.length)
  await consumer.disconnect()
  assert.deepEqual(got.map(({ message: m }) => m.toJSON()), stamps.map((timestamp, i) => ({
    key: i % 2 ? null : Buffer.from(`k${i}`), value: Buffer.from(`v${i}`), offset: String(i), timestamp, timestampType: 'CreateTime', headers: {},
  })))
  // A view is made once and kept; kafkajs code that replaces a value may.
  const m = got[0].message
  assert.equal(m.value, m.value)
  m.value = Buffer.from('replaced')
  assert.equal(m.value.toString(), 'replaced')
})

test('record headers as kafkajs gives them: repeated keys as arrays, null values, beside messages without', async () => {
  await admin.createTopics({ topics: [{ topic: 'headers', numPartitions: 1 }] })
  const producer = client.producer()
  await producer.send({
    topic: 'headers',
    messages: [
      { value: 'h1', headers: { trace: 't1', multi: ['a', Buffer.from('b')], none: null } },
      { value: 'plain' },
      { value: 'h2', headers: { 'content-type': Buffer.from('text/plain') } },
    ],
  })
  await assert.rejects(
    producer.send({ topic: 'headers', messages: [{ value: 'x', headers: { bad: 42 } }] }),
    (e) => e instanceof TypeError && /messages\[0\]\.headers\["bad"\]/.test(e.message),
  )
  await producer.disconnect()
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'headers', partition: 0 }], fromBeginning: true })
  const got = await collect(consumer, 3)
  await consumer.disconnect()
  assert.deepEqual(got.map(({ message: m }) => [m.value.toString(), m.headers]), [
    ['h1', { trace: Buffer.from('t1'), multi: [Buffer.from('a'), Buffer.from('b')], none: null }],
    ['plain', {}],
    ['h2', { 'content-type': Buffer.from('text/plain') }],
  ])
})

test('an idempotent producer (kafkajs idempotent: true) writes each message once and keeps Kafka\'s rules', async () => {
  await admin.createTopics({ topics: [{ topic: 'idempotent', numPartitions: 2 }] })
  const producer = client.producer({ idempotent: true, maxInFlightRequests: 5 })
  const meta = await producer.send({ topic: 'idempotent', messages: Array.from({ length: 2000 }, (_, i) => ({ value: `v${i}`, partition: i % 2 })) })
  assert.deepEqual(meta.filter((m) => m.partition === 1).map((m) => m.offset), Array.from({ length: 1000 }, (_, i) => String(i)))
  // A send with other settings would open a second sequence for the partition: refused.
  await assert.rejects(producer.send({ topic: 'idempotent', compression: 'gzip', messages: [{ value: 'x' }] }), (e) => e instanceof SluicewayError && e.code === 'INVALID_ARGUMENT' && /idempotent/.test(e.message))
  await producer.disconnect()
  const refused = client.producer({ idempotent: true, acks: 1 })
  await assert.rejects(refused.connect(), (e) => e instanceof SluicewayError && e.code === 'INVALID_CONFIG' && /acks/.test(e.message) && /enable\.idempotence/.test(e.message))
  assert.throws(() => client.producer({ idempotent: 'yes' }), (e) => e instanceof TypeError && /options\.idempotent/.test(e.message))
})

test('a bad per-send acks or compression is a TypeError naming it, and sends nothing', async () => {
  await admin.createTopics({ topics: [{ topic: 'persend-bad', numPartitions: 1 }] })
  const msgs = [{ value: 'v' }]
  const producer = client.producer()
  const rejects = (record, re) => assert.rejects(producer.send({ topic: 'persend-bad', messages: msgs, ...record }), (e) => e instanceof TypeError && re.test(e.message))
  await rejects({ acks: 2 }, /^acks: "2" is not allowed; allowed: all, -1, 1, 0$/)
  await rejects({ compression: 'brotli' }, /^compression: "brotli" is not allowed; allowed: none, gzip, snappy, lz4, zstd$/)
  await rejects({ acks: {} }, /^record\.acks: expected/)
  await rejects({ compression: 9 }, /^record\.compression: expected a codec name or kafkajs's CompressionTypes code 0-4/)
  await rejects({ compression: {} }, /^record\.compression: expected a string/)
  await assert.rejects(producer.sendBatch({ acks: 5, topicMessages: [{ topic: 'persend-bad', messages: msgs }] }), /^TypeError: acks: "5" is not allowed/)
  await producer.send({ topic: 'persend-bad', acks: 'all', compression: 'lz4', messages: msgs })
  // kafkajs's numeric CompressionTypes codes (GZIP is 1 there), for code ported as is.
  await producer.send({ topic: 'persend-bad', compression: 1, messages: msgs })
  await producer.disconnect()
  assert.equal((await admin.fetchTopicOffsets('persend-bad'))[0].high, '2')
})

test('async iterator, pause and resume', async () => {
  await admin.createTopics({ topics: [{ topic: 'iter', numPartitions: 2 }] })
  const producer = client.producer()
  await producer.send({ topic: 'iter', messages: Array.from({ length: 20 }, (_, i) => ({ partition: i % 2, value: `v${i}` })) })
  await producer.disconnect()
  const consumer = client.consumer()
  await consumer.assign({ partitions: [{ topic: 'iter', partition: 0 }, { topic: 'iter', partition: 1 }], fromBeginning: true })
  consumer.pause([{ topic: 'iter', partitions: [1] }])
  assert.deepEqual(consumer.paused(), [{ topic: 'iter', partition: 1 }])
  const got = []
  for await (const m of consumer) {
    got.push(m)
    if (got.length === 10) break
  }
  assert.ok(got.every((m) => m.partition === 0))
  consumer.resume([{ topic: 'iter' }])
  const rest = await collect(consumer, 10)
  assert.ok(rest.every((m) => m.partition === 1))
  assert.equal(await consumer.position({ topic: 'iter', partition: 1 }), '10')
  await consumer.disconnect()
})

test('admin: topics, metadata, offsets, groups', async () => {
  await admin.createTopics({ topics: [{ topic: 'adm', numPartitions: 3, configEntries: [{ name: 'retention.ms', value: '3600000' }] }] })
  assert.equal(await admin.createTopics({ topics: [{ topic: 'adm', numPartitions: 3 }] }), false)
  assert.ok((await admin.listTopics()).includes('adm'))
  const { topics } = await admin.fetchTopicMetadata({ topics: ['adm'] })
  assert.equal(topics[0].partitions.length, 3)
  const producer = client.producer()
  await producer.send({ topic: 'adm', messages: [{ value: 'x', partition: 1 }] })
  await producer.disconnect()
  const offsets = await admin.fetchTopicOffsets('adm')
  assert.deepEqual(offsets.map((o) => [o.partition, o.high, o.low]), [[0, '0', '0'], [1, '1', '0'], [2, '0', '0']])
  const c = client.consumer({ groupId: 'adm-group' })
  await c.subscribe({ topics: ['adm'], fromBeginning: true })
  await collect(c, 1)
  await c.commitOffsets()
  const { groups } = await admin.listGroups()
  assert.ok(groups.some((g) => g.groupId === 'adm-group'))
  const described = await admin.describeGroups(['adm-group'])
  assert.equal(described.groups[0].members.length, 1)
  await c.disconnect()
  await admin.deleteTopics({ topics: ['adm'] })
  assert.ok(!(await admin.listTopics()).includes('adm'))
})

test('the event loop stays free while a consumer long-polls', async () => {
  await admin.createTopics({ topics: [{ topic: 'idle', numPartitions: 1 }] })
  const consumer = client.consumer({ 'fetch.max.wait.ms': 500 })
  await consumer.assign({ partitions: [{ topic: 'idle', partition: 0 }] })
  const h = monitorEventLoopDelay({ resolution: 10 })
  h.enable()
  const polls = [consumer.poll({ timeout: 2000 }), consumer.poll({ timeout: 2000 })]
  // Timers keep firing on time while the polls wait.
  let ticks = 0
  const timer = setInterval(() => ticks++, 20)
  await Promise.all(polls)
  clearInterval(timer)
  h.disable()
  assert.ok(ticks >= 50, `only ${ticks} timer ticks in 2 s`)
  assert.ok(h.max < 200e6, `event loop delay max ${h.max / 1e6} ms`)
  await consumer.disconnect()
})

test('the process exits after disconnect() with an idle consumer', async () => {
  const script = `
    const { Sluiceway } = require(${JSON.stringify(join(repo, 'node'))})
    ;(async () => {
      const c = new Sluiceway({ brokers: [${JSON.stringify(broker.address)}] }).consumer({ groupId: 'exit' })
      await c.subscribe({ topics: ['idle'] })
      await c.run({ eachMessage: async () => {} })
      await new Promise((r) => setTimeout(r, 500))
      await c.disconnect()
      console.log('disconnected')
    })()`
  const started = Date.now()
  const { stdout } = await run(process.execPath, ['-e', script], { timeout: 20000 })
  assert.match(stdout, /disconnected/)
  assert.ok(Date.now() - started < 15000)
})

test('examples/quickstart.mjs runs', async () => {
  const { stdout } = await run(process.execPath, [join(repo, 'examples', 'quickstart.mjs'), broker.address, tempDir()], { timeout: 60000 })
  assert.match(stdout, /delivered at offset 9/)
  assert.match(stdout, /consumed offset 9: hello 9/)
  assert.match(stdout, /replayed from offset 0/)
})

// Sluiceway quickstart (Node.js), the same steps in every language: create a topic, produce ten
// records, consume and commit them with a local offset store, replay from the beginning.
// Start a broker (`make run`), then `node examples/quickstart.mjs [HOST:PORT [STORE_DIR]]` (after
// `npm install` in `node/`, or with the `sluiceway` package installed).
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRequire } from 'node:module'

// The package from npm when installed, else the checkout's `node/` (what the tests run).
const require = createRequire(import.meta.url)
let sluiceway
try {
  sluiceway = require('sluiceway')
} catch {
  sluiceway = require('../node')
}
const { Sluiceway } = sluiceway

const bootstrap = process.argv[2] ?? '127.0.0.1:9292'
const store = process.argv[3] ?? join(tmpdir(), 'sluiceway-quickstart')
const client = new Sluiceway({ brokers: [bootstrap], clientId: 'quickstart' })

const admin = client.admin()
await admin.createTopics({ topics: [{ topic: 'quickstart', numPartitions: 3 }] }) // false if it exists

const producer = client.producer()
await producer.connect()
const delivered = await producer.send({
  topic: 'quickstart',
  messages: Array.from({ length: 10 }, (_, i) => ({ value: `hello ${i}`, partition: 0 })),
})
for (const m of delivered) console.log(`delivered at offset ${m.offset}`)
await producer.disconnect()

const consumer = client.consumer({
  offsetStore: store,
  'enable.auto.commit': false,
})
await consumer.assign({ partitions: [{ topic: 'quickstart', partition: 0 }], fromBeginning: true })
let seen = 0
while (seen < 10) {
  const { messages } = await consumer.poll({ timeout: 5000 })
  if (messages.length === 0) throw new Error('no records within 5 s')
  for (const { message } of messages) console.log(`consumed offset ${message.offset}: ${message.value}`)
  seen += messages.length
}
await consumer.commitOffsets()
await consumer.seekToBeginning()
const { messages: replay } = await consumer.poll({ timeout: 5000 })
if (replay.length === 0) throw new Error('nothing replayed')
console.log(`replayed from offset ${replay[0].message.offset}`)
await consumer.disconnect()
await admin.disconnect()

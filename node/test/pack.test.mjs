// `npm pack` gives a tarball that an empty project installs and uses without a Rust toolchain:
// the native module for this platform is inside, and the install script builds nothing.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdtempSync, writeFileSync, rmSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { startBroker, repo } from './broker.mjs'

const run = promisify(execFile)
let broker, dir
before(async () => {
  broker = await startBroker()
  dir = mkdtempSync(join(tmpdir(), 'sluiceway-pack-'))
})
after(async () => {
  await broker.stop()
  rmSync(dir, { recursive: true, force: true })
})

test('the npm pack tarball installs into an empty project and round-trips', async () => {
  // The test builds are debug; `npm pack` without --ignore-scripts runs `prepack` (release).
  await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: join(repo, 'node') })
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))
  assert.ok(tarball)
  const project = join(dir, 'app')
  await run('mkdir', ['-p', project])
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  // Only node and npm on PATH: no cargo, no rustc.
  const env = { ...process.env, PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, CARGO: '/nonexistent', RUSTC: '/nonexistent' }
  delete env.CARGO_HOME
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(dir, tarball)], { cwd: project, env })
  writeFileSync(join(project, 'roundtrip.mjs'), `
    import { Sluiceway } from 'sluiceway'
    const client = new Sluiceway({ brokers: [process.argv[2]] })
    const admin = client.admin()
    await admin.createTopics({ topics: [{ topic: 'packed', numPartitions: 1 }] })
    const producer = client.producer()
    const [m] = await producer.send({ topic: 'packed', messages: [{ key: 'k', value: 'from the tarball' }] })
    await producer.disconnect()
    const consumer = client.consumer()
    await consumer.assign({ partitions: [{ topic: 'packed', partition: 0 }], fromBeginning: true })
    const { messages } = await consumer.poll({ timeout: 5000 })
    console.log(m.offset, messages[0].message.value.toString())
    await consumer.disconnect()
  `)
  const { stdout } = await run(process.execPath, ['roundtrip.mjs', broker.address], { cwd: project, env, timeout: 30000 })
  assert.equal(stdout.trim(), '0 from the tarball')
})

// A real `sluiceway broker` per test file (the node:test counterpart of the Rust `TestBroker`):
// a temp data dir, port 0, the address read from the `listening on HOST:PORT` line, killed after.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, openSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const brokerBin = process.env.SLUICEWAY_BIN ?? join(repo, 'target', 'debug', 'sluiceway')

export async function startBroker({ groupDelay = true, bin = brokerBin } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'sluiceway-node-'))
  const args = ['broker', '--data-dir', join(root, 'data'), '--listen', '127.0.0.1:0', '--log', 'info']
  // The group rebalance delay (3 s by default) only slows the tests down, except where it matters.
  if (groupDelay) args.push('--group-initial-rebalance-delay-ms', '0')
  const log = openSync(join(root, 'broker.log'), 'a')
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', log] })
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('broker did not start within 60 s')), 60_000)
    child.once('exit', (code) => reject(new Error(`broker exited with ${code}; log in ${root}`)))
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^listening on (\S+)$/.exec(line)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
  })
  return {
    address,
    root,
    async stop() {
      child.kill('SIGTERM')
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)))
      rmSync(root, { recursive: true, force: true })
    },
  }
}

export function tempDir() {
  return mkdtempSync(join(tmpdir(), 'sluiceway-node-store-'))
}

/** Polls until `n` messages arrived or `ms` passed. */
export async function collect(consumer, n, ms = 15000) {
  const out = []
  const deadline = Date.now() + ms
  while (out.length < n && Date.now() < deadline) {
    const { messages } = await consumer.poll({ timeout: 500 })
    out.push(...messages)
  }
  return out
}

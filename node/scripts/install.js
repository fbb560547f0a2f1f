// `npm install` in a checkout builds the package from source (Rust via @napi-rs/cli, then
// TypeScript). An installed tarball already carries `dist/` and the native module for its
// platform, so there is nothing to build and no Rust toolchain is needed.
'use strict'
const { existsSync, readdirSync } = require('node:fs')
const { join } = require('node:path')
const { execSync } = require('node:child_process')

const root = join(__dirname, '..')
const nativeDir = join(root, 'native')
const built =
  existsSync(join(root, 'dist', 'index.js')) &&
  existsSync(nativeDir) &&
  readdirSync(nativeDir).some((f) => f.endsWith('.node'))
if (!built) {
  execSync('npm run build', { cwd: root, stdio: 'inherit' })
}

#!/usr/bin/env bash
# Installs what Sluiceway's build and tests need on a fresh machine, and nothing by hand.
# Idempotent: each step checks before it installs.
#   - Rust (rustup) must already be there.
#   - Debian packages: etcd-server (the cluster registry the cluster tests start for real),
#     protobuf-compiler (protoc, which the etcd-client crate's build script needs; our own proto
#     crate uses the vendored protoc) and libprotobuf-dev (the well-known types such as
#     google/protobuf/descriptor.proto that etcd's protos import; protoc alone lacks them),
#     python3 and python3-venv (make test-python makes .venv and installs its tools from PyPI),
#     nodejs and npm (the Node.js package),
#     maven and a JDK 17 (make test-kotlin: Maven fetches Kotlin, JNA, coroutines and JUnit from
#     Maven Central), gcc (make test-swift parses the generated C header; Rust's linker needs
#     it anyway), iproute2 and nftables (the network-partition tests, `broker/tests/partitions.rs`,
#     put etcd and the brokers in network namespaces and cut links with nftables rules).
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

apt_packages=()
need etcd || apt_packages+=(etcd-server)
need protoc || apt_packages+=(protobuf-compiler)
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || apt_packages+=(libprotobuf-dev)
# The Python client's tests (make test-python): an interpreter that can make virtualenvs.
need python3 || apt_packages+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_packages+=(python3-venv)
# Node.js and npm build and test the npm package (`make test-node`); its dev dependencies
# (@napi-rs/cli, TypeScript) come from node/package-lock.json via `npm ci`.
need node || apt_packages+=(nodejs)
need npm || apt_packages+=(npm)
# The Kotlin client's tests (make test-kotlin) and the Swift checks (make test-swift).
need mvn || apt_packages+=(maven)
need javac || apt_packages+=(openjdk-17-jdk-headless)
need gcc || apt_packages+=(gcc)
# The network-partition tests (they skip, saying why, where namespaces cannot be made).
need ip || apt_packages+=(iproute2)
need nft || apt_packages+=(nftables)
if ((${#apt_packages[@]})); then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    need sudo || { echo "setup: need root or sudo to install ${apt_packages[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${apt_packages[*]} (apt)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi
# Debian's etcd-server package starts an etcd on the default ports; tests start their own on free
# ports, so the packaged service is not needed (and is harmless if running).

echo "setup: ok"

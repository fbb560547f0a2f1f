#!/usr/bin/env bash
# A local Sluiceway cluster for development: one etcd and three brokers on loopback.
#
#   scripts/cluster.sh start  [DIR]   start etcd + brokers 1..3, wait until each listens, print
#                                     the bootstrap list
#   scripts/cluster.sh status [DIR]   show what runs (pid, address, alive or not)
#   scripts/cluster.sh stop   [DIR]   stop exactly the processes this script started in DIR
#
# DIR (default ${TMPDIR:-/tmp}/sluiceway-cluster) holds everything: etcd's data (etcd/), each
# broker's data (broker-N/), logs (*.log), and the recorded pids and ports (run/). Data survives
# stop/start; delete DIR to start from nothing.
#
# Environment:
#   SLUICEWAY_BIN                 the binary (default target/debug/sluiceway; built when missing)
#   SLUICEWAY_CLUSTER_PORTS       broker ports, space-separated (default "9301 9302 9303")
#   SLUICEWAY_CLUSTER_BROKER_ARGS extra `sluiceway broker` flags for every broker (word-split)
#   SLUICEWAY_CLUSTER_ETCD        etcd binary (default etcd on PATH, Debian's /usr/bin/etcd)
#
# etcd's client and peer ports are chosen free by the script on the first start and reused by
# later starts over the same DIR (etcd keeps its peer address in its data directory).
set -euo pipefail

readonly WAIT_S=60            # bound on every wait for a process to come up
readonly STOP_WAIT_S=30       # bound on a graceful stop before SIGKILL
readonly SESSION_TIMEOUT_MS=6000

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

cmd=${1:-}
[[ -n $cmd ]] || usage
dir=${2:-${TMPDIR:-/tmp}/sluiceway-cluster}
# Absolute, so that the pid check below (the process's command line names the directory) is exact.
dir=$(realpath -m -- "$dir")
run="$dir/run"
read -r -a broker_ports <<<"${SLUICEWAY_CLUSTER_PORTS:-9301 9302 9303}"
readonly broker_count=${#broker_ports[@]}

repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# True when something accepts connections on 127.0.0.1:$1.
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port nobody listens on, from the ephemeral-free range 20000..29999.
free_port() {
  local p tries=0
  while ((tries < 200)); do
    p=$((20000 + RANDOM % 10000))
    if ! port_busy "$p"; then
      echo "$p"
      return 0
    fi
    tries=$((tries + 1))
  done
  die "no free loopback port found"
}

# True when pid $1 is alive and is the process we recorded (its command line mentions $2).
ours() {
  local pid=$1 marker=$2
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

pid_of() {
  local f="$run/$1.pid"
  [[ -s $f ]] && cat "$f"
}

# Waits up to WAIT_S for "$@" to succeed while pid $1 lives; fails otherwise.
wait_for() {
  local pid=$1
  shift
  local deadline=$((SECONDS + WAIT_S))
  until "$@"; do
    process_alive "$pid" || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

etcd_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health":"true"'
}

broker_listening() {
  grep -q '^listening on ' "$1"
}

process_alive() {
  kill -0 "$1" 2>/dev/null
}

start_etcd() {
  local etcd_bin=${SLUICEWAY_CLUSTER_ETCD:-etcd} client peer
  command -v "$etcd_bin" >/dev/null || die "etcd not found (run scripts/setup.sh: Debian's etcd-server)"
  if [[ -s $run/etcd.ports ]]; then
    read -r client peer <"$run/etcd.ports"
    port_busy "$client" && die "etcd's recorded client port $client is taken by another process"
    port_busy "$peer" && die "etcd's recorded peer port $peer is taken by another process"
  else
    client=$(free_port)
    peer=$(free_port)
    [[ $client != "$peer" ]] || peer=$(free_port)
    echo "$client $peer" >"$run/etcd.ports"
  fi
  nohup "$etcd_bin" \
    --name sluiceway-dev \
    --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$client" \
    --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "sluiceway-dev=http://127.0.0.1:$peer" \
    --initial-cluster-state new \
    </dev/null >"$dir/etcd.log" 2>&1 &
  echo $! >"$run/etcd.pid"
  if ! wait_for "$(pid_of etcd)" etcd_healthy "$client"; then
    tail -n 20 "$dir/etcd.log" >&2 || true
    die "etcd did not become healthy on 127.0.0.1:$client (exited, or not within ${WAIT_S}s; log: $dir/etcd.log)"
  fi
  echo "etcd     pid $(pid_of etcd)  127.0.0.1:$client"
}

start_broker() {
  local id=$1 port=$2 client=$3 bin=$4
  local out="$dir/broker-$id.out"
  port_busy "$port" && die "port $port (broker $id) is taken; set SLUICEWAY_CLUSTER_PORTS"
  local -a extra=()
  # Word splitting is the documented interface of SLUICEWAY_CLUSTER_BROKER_ARGS.
  read -r -a extra <<<"${SLUICEWAY_CLUSTER_BROKER_ARGS:-}"
  : >"$out"
  nohup "$bin" broker \
    --broker-id "$id" \
    --data-dir "$dir/broker-$id" \
    --listen "127.0.0.1:$port" \
    --registry "etcd://127.0.0.1:$client" \
    --registry-session-timeout-ms "$SESSION_TIMEOUT_MS" \
    ${extra[@]+"${extra[@]}"} \
    </dev/null >"$out" 2>"$dir/broker-$id.log" &
  echo $! >"$run/broker-$id.pid"
}

cmd_start() {
  mkdir -p "$run"
  local name pid
  for name in etcd $(seq -f 'broker-%g' 1 "$broker_count"); do
    pid=$(pid_of "$name" || true)
    if [[ -n $pid ]] && ours "$pid" "$dir"; then
      die "$name is already running (pid $pid); run: $0 stop $dir"
    fi
  done

  local root bin
  root=$(repo_root)
  bin=${SLUICEWAY_BIN:-$root/target/debug/sluiceway}
  if [[ ! -x $bin ]]; then
    [[ -z ${SLUICEWAY_BIN:-} ]] || die "SLUICEWAY_BIN=$bin is not an executable"
    echo "building $bin" >&2
    (cd "$root" && cargo build -p sluiceway-broker)
  fi

  # A start that fails half-way stops what it started instead of leaving it behind.
  trap 'echo "cluster.sh: start failed; stopping what was started" >&2; cmd_stop >&2 || true' EXIT
  start_etcd
  local client
  read -r client _ <"$run/etcd.ports"

  local i
  for ((i = 1; i <= broker_count; i++)); do
    start_broker "$i" "${broker_ports[i - 1]}" "$client" "$bin"
  done
  # Brokers start in parallel; wait for each to print its address (bounded).
  local bootstrap=()
  for ((i = 1; i <= broker_count; i++)); do
    pid=$(pid_of "broker-$i")
    if ! wait_for "$pid" broker_listening "$dir/broker-$i.out"; then
      tail -n 20 "$dir/broker-$i.log" >&2 || true
      die "broker $i did not start listening (exited, or not within ${WAIT_S}s; log: $dir/broker-$i.log)"
    fi
    local addr
    addr=$(sed -n 's/^listening on //p' "$dir/broker-$i.out" | head -n 1)
    echo "broker $i pid $pid  $addr"
    bootstrap+=("$addr")
  done
  trap - EXIT
  local IFS=,
  echo "bootstrap: ${bootstrap[*]}"
  echo "export SLUICEWAY_BOOTSTRAP=${bootstrap[*]}"
}

# SIGTERM, a bounded wait, then SIGKILL; only for a pid that is still the process we started.
stop_one() {
  local name=$1 pid
  pid=$(pid_of "$name" || true)
  [[ -n $pid ]] || return 0
  if ours "$pid" "$dir"; then
    # A stopped (SIGSTOP) process must be continued to act on SIGTERM.
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_WAIT_S))
    while process_alive "$pid" && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if process_alive "$pid"; then
      echo "$name (pid $pid) ignored SIGTERM for ${STOP_WAIT_S}s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopped $name (pid $pid)"
  else
    echo "$name (pid $pid) was not running"
  fi
  rm -f "$run/$name.pid"
}

cmd_stop() {
  [[ -d $run ]] || die "nothing recorded in $run"
  local i
  # Brokers first, so that they can revoke their leases while etcd still runs.
  for ((i = 1; i <= broker_count; i++)); do
    stop_one "broker-$i"
  done
  stop_one etcd
}

cmd_status() {
  [[ -d $run ]] || die "nothing recorded in $run"
  local name pid state addr
  for name in etcd $(seq -f 'broker-%g' 1 "$broker_count"); do
    pid=$(pid_of "$name" || true)
    if [[ -z $pid ]]; then
      printf '%-9s %s\n' "$name" "not started"
      continue
    fi
    if ours "$pid" "$dir"; then state=running; else state=dead; fi
    if [[ $name == etcd ]]; then
      addr="127.0.0.1:$(cut -d' ' -f1 "$run/etcd.ports")"
    else
      addr=$(sed -n 's/^listening on //p' "$dir/$name.out" 2>/dev/null | head -n 1)
    fi
    printf '%-9s pid %-8s %-8s %s\n' "$name" "$pid" "$state" "${addr:--}"
  done
}

case $cmd in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac

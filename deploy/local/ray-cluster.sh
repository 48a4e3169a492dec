#!/usr/bin/env bash
# A real multi-node Ray cluster on one host, on loopback: a head and N worker nodes, each a separate
# raylet with its own --temp-dir, explicit memory, its own ports. For development and for our
# integration tests (which use this script, so it stays true).
#
#   ray-cluster.sh start DIR [WORKERS]   head + WORKERS nodes (default 2); prints the addresses
#   ray-cluster.sh add-node DIR NAME     one more worker node
#   ray-cluster.sh kill-node DIR NAME    SIGKILL a node's processes, as a crashed machine would
#   ray-cluster.sh stop DIR              stop every process of this cluster (and only this one)
#
# DIR holds the nodes' temp dirs; keep it short (/tmp/xyz): Ray's unix sockets live under it and
# their paths must stay under 107 bytes. `ray` must be on PATH (activate the project's venv).
#
# Environment (defaults in brackets):
#   RAY_PORT [6379]  RAY_DASHBOARD_PORT [8265]  RAY_CLIENT_PORT [10001]
#   HEAD_CPUS [0: trials run on worker nodes only]  NODE_CPUS [1]  NODE_GPUS [0]
#   NODE_MEMORY [2000000000]  OBJECT_STORE_MEMORY [100000000]  (bytes, per node)
#   RAY_AUTH_MODE [token]: every node and every client must agree. With token auth, export
#   RAY_AUTH_TOKEN first (e.g. `export RAY_AUTH_TOKEN=$(openssl rand -hex 32)`); it is passed on in
#   the environment only, never written to a file. RAY_AUTH_MODE=disabled turns auth off everywhere.
set -euo pipefail

usage() { sed -n '2,22p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2

RAY_PORT=${RAY_PORT:-6379}
RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
RAY_CLIENT_PORT=${RAY_CLIENT_PORT:-10001}
HEAD_CPUS=${HEAD_CPUS:-0}
NODE_CPUS=${NODE_CPUS:-1}
NODE_GPUS=${NODE_GPUS:-0}
NODE_MEMORY=${NODE_MEMORY:-2000000000}
OBJECT_STORE_MEMORY=${OBJECT_STORE_MEMORY:-100000000}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAY_USAGE_STATS_ENABLED=0
here=$(cd "$(dirname "$0")" && pwd)
# Every Python process of this cluster keeps 127.0.0.1 as it is (see loopback/sitecustomize.py):
# without it Ray binds its servers to the host's outward address.
export PYTHONPATH="$here/loopback${PYTHONPATH:+:$PYTHONPATH}"

check_auth() {
  if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    echo "ray-cluster.sh: RAY_AUTH_MODE=token needs RAY_AUTH_TOKEN in the environment:" \
      "export RAY_AUTH_TOKEN=\$(openssl rand -hex 32), or set RAY_AUTH_MODE=disabled" >&2
    exit 2
  fi
}

free_ports() {  # N ports no part of this cluster holds or has been promised (see free_ports.py)
  python3 "$here/free_ports.py" "$1" --record "$dir/used-ports" \
    --not "$RAY_PORT" "$RAY_DASHBOARD_PORT" "$RAY_CLIENT_PORT"
}

# Nodes on one host must not share ports: each gets its own agent/metrics ports and its own slice
# of worker ports (Ray's default range 10002-19999 would be contended by every raylet here).
node_ports() {
  local index=$1
  local low=$((20000 + index * 300))
  local agent grpc metrics runtime_env
  read -r agent grpc metrics runtime_env <<<"$(free_ports 4)"
  echo "--dashboard-agent-listen-port $agent --dashboard-agent-grpc-port $grpc" \
    "--metrics-export-port $metrics --runtime-env-agent-port $runtime_env" \
    "--min-worker-port $low --max-worker-port $((low + 299))"
}

start_worker() {
  local name=$1 index=$2
  mkdir -p "$dir/$name"
  # shellcheck disable=SC2046
  ray start --address "127.0.0.1:$RAY_PORT" --node-ip-address 127.0.0.1 \
    --temp-dir "$dir/$name" --num-cpus "$NODE_CPUS" --num-gpus "$NODE_GPUS" \
    --memory "$NODE_MEMORY" --object-store-memory "$OBJECT_STORE_MEMORY" \
    --resources "{\"node:$name\": 1}" $(node_ports "$index") --disable-usage-stats >"$dir/$name.log" 2>&1 \
    || { echo "ray-cluster.sh: node $name failed to start; see $dir/$name.log" >&2; tail -5 "$dir/$name.log" >&2; exit 1; }
  echo "$name" >>"$dir/nodes"
}

# Ready means a Ray Client can connect: the proxy on the head starts a server per client, and the
# first start after `ray start` (cold imports, the runtime-env agent coming up) is the slow one.
# Probing here makes that start ours, not a user's first `--address ray://` (issue: "Initialization
# failure from server" on a fresh cluster); a probe that fails names the logs that say why.
client_ready() {
  local limit=${RAY_CLIENT_READY_S:-120} deadline=$((SECONDS + ${RAY_CLIENT_READY_S:-120}))
  until python3 - "$RAY_CLIENT_PORT" >>"$dir/client-probe.log" 2>&1 <<'PY'
import sys

import ray

ray.init(f"ray://127.0.0.1:{sys.argv[1]}", log_to_driver=False)
ray.shutdown()
PY
  do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ray-cluster.sh: no Ray Client could connect to ray://127.0.0.1:$RAY_CLIENT_PORT in" \
        "$limit s; see $dir/client-probe.log and $dir/head/session_latest/logs/ray_client_server*.err" >&2
      tail -3 "$dir/client-probe.log" >&2
      exit 1
    fi
    sleep 2
  done
}

pids_of() {  # processes whose command line names this path, and all their descendants
  ps -ww -eo pid=,ppid=,args= | awk -v p="$1" '
    { parent[$1] = $2; if (index($0, p) && !/awk/) hit[$1] = 1 }
    END {
      for (pid in parent) {
        for (q = pid; q in parent && q > 1; q = parent[q]) if (q in hit) { print pid; break }
      }
    }'
}

kill_path() {
  local path=$1 sig=$2
  for pid in $(pids_of "$path"); do kill "-$sig" "$pid" 2>/dev/null || true; done
}

# The head's Ray Client server outlives `ray start` as an orphan whose command line names no path;
# its ports (saved at start) identify it.
client_server_pids() {
  [ -f "$dir/ports" ] || return 0
  read -r gcs client <"$dir/ports"
  ps -ww -eo pid=,args= | awk -v g=":$gcs " -v c="--port=$client " \
    'index($0, "ray.util.client.server") && index($0, g) && index($0, c) {print $1}'
}

case "$cmd" in
  start)
    check_auth
    workers=${1:-2}
    mkdir -p "$dir/head"
    : >"$dir/nodes"
    : >"$dir/used-ports"
    # shellcheck disable=SC2046
    ray start --head --node-ip-address 127.0.0.1 --port "$RAY_PORT" \
      --dashboard-host 127.0.0.1 --dashboard-port "$RAY_DASHBOARD_PORT" \
      --ray-client-server-port "$RAY_CLIENT_PORT" --temp-dir "$dir/head" \
      --num-cpus "$HEAD_CPUS" --num-gpus 0 --memory "$NODE_MEMORY" \
      --object-store-memory "$OBJECT_STORE_MEMORY" $(node_ports 0) --disable-usage-stats \
      >"$dir/head.log" 2>&1 \
      || { echo "ray-cluster.sh: the head failed to start; see $dir/head.log" >&2; tail -5 "$dir/head.log" >&2; exit 1; }
    echo head >>"$dir/nodes"
    echo "$RAY_PORT $RAY_CLIENT_PORT" >"$dir/ports"
    for i in $(seq 1 "$workers"); do start_worker "worker$i" "$i"; done
    client_ready
    echo "ray: 127.0.0.1:$RAY_PORT"
    echo "jobs: http://127.0.0.1:$RAY_DASHBOARD_PORT"
    echo "client: ray://127.0.0.1:$RAY_CLIENT_PORT"
    ;;
  add-node)
    check_auth
    name=${1:?add-node needs a NAME}
    start_worker "$name" "$(wc -l <"$dir/nodes")"
    ;;
  kill-node)
    name=${1:?kill-node needs a NAME}
    kill_path "$dir/$name/" KILL
    ;;
  stop)
    for pid in $(client_server_pids); do kill -TERM "$pid" 2>/dev/null || true; done
    kill_path "$dir/" TERM
    for _ in $(seq 1 40); do
      [ -z "$(pids_of "$dir/")$(client_server_pids)" ] && exit 0
      sleep 0.25
    done
    kill_path "$dir/" KILL
    for pid in $(client_server_pids); do kill -KILL "$pid" 2>/dev/null || true; done
    ;;
  *) usage ;;
esac

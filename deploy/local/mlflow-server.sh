#!/usr/bin/env bash
# An MLflow tracking server on PostgreSQL 15 (Debian's), on one host and on loopback only. For
# development and for our integration tests (which use this script, so it stays true).
#
#   mlflow-server.sh start DIR [PORT]   PostgreSQL (initdb on the first start; later starts reuse its
#                                       data) + `mlflow server` on 127.0.0.1:PORT (default: the port
#                                       of the last start, else 5000); waits for GET /health, prints
#                                       the backend store URI and, last, the tracking URI
#   mlflow-server.sh stop-mlflow DIR    stop only the MLflow server; PostgreSQL and all data stay (a
#                                       tracking-server outage; `start DIR` brings it back as it was)
#   mlflow-server.sh stop DIR           stop MLflow and PostgreSQL; no process is left, DIR is kept
#
# DIR holds everything: pg/data (the cluster), pg/run (its unix socket), pg/postgres.log,
# artifacts/, mlflow.log, mlflow.pid, port, pgport. Delete DIR after `stop` to forget the data.
# Keep DIR short (/tmp/mlf): the socket's path must stay under 107 bytes. PostgreSQL refuses to run
# as root, so as root its commands run as the `postgres` user, which must be able to reach DIR
# (e.g. `mkdir -m 0755 /tmp/mlf`; pytest's tmp_path is 0700 and will not do).
#
# Security: a single-user dev host only. PostgreSQL uses trust authentication on 127.0.0.1 and its
# own socket, so there is no password at all (nothing to leak into a file or a log), but any local
# user may connect; MLflow has no login. Both listen on 127.0.0.1 only. For a shared or a production
# server use deploy/mlflow/ (passwords, basic-auth, TLS in front).
#
# Environment (defaults in brackets):
#   PGPORT [a free port, chosen on the first start and saved in DIR/pgport]
#   PGBIN [/usr/lib/postgresql/15/bin]  MLFLOW [mlflow: the venv's, with psycopg2-binary installed]
#   START_TIMEOUT [60] seconds to wait for /health before giving up with the log's tail
set -euo pipefail

usage() { sed -n '2,27p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MLFLOW=${MLFLOW:-mlflow}
START_TIMEOUT=${START_TIMEOUT:-60}

die() { echo "mlflow-server.sh: $*" >&2; exit 1; }

[ -d "$dir" ] || [ "$cmd" = start ] || die "$dir does not exist"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
case "$dir" in *[[:space:]\'\"\\]*) die "DIR must not contain spaces, quotes or backslashes: $dir" ;; esac
pgroot=$dir/pg
pgdata=$pgroot/data
pgrun=$pgroot/run

# PostgreSQL's commands: as the postgres user when we are root (initdb and postgres refuse root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
secs_since() { local d=$(($(now_ms) - $1)); printf '%d.%01d' $((d / 1000)) $((d % 1000 / 100)); }

free_port_but() {  # a free port other than $1 (MLflow's, which may not be listening yet)
  python3 "$(dirname "$0")/free_ports.py" 1 --not "$1"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_running() { [ -f "$pgdata/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" status -D "$pgdata" >/dev/null 2>&1; }

# Whether session SID (the MLflow server's, = its pid and process group) has a live process; zombies
# do not count (an init that is slow to reap them would hold `stop` up).
# shellcheck disable=SC2009  # pgrep cannot leave zombies out
session_alive() { ps -o stat= -s "$1" 2>/dev/null | grep -qv '^Z'; }

mlflow_pid() {  # the server's pid, if it is running
  local pid
  [ -f "$dir/mlflow.pid" ] || return 1
  pid=$(cat "$dir/mlflow.pid")
  [ -n "$pid" ] && session_alive "$pid" && echo "$pid"
}

pids_of() {  # processes whose command line names this path, and all their descendants
  ps -ww -eo pid=,ppid=,args= | awk -v p="$1" '
    { parent[$1] = $2; if (index($0, p) && !/awk|mlflow-server\.sh/) hit[$1] = 1 }
    END {
      for (pid in parent) {
        for (q = pid; q in parent && q > 1; q = parent[q]) if (q in hit) { print pid; break }
      }
    }'
}

start_postgres() {
  local pgport=$1 t0 fresh=
  t0=$(now_ms)
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    fresh=1
    mkdir -p "$pgroot"
    if [ "$(id -u)" -eq 0 ]; then
      as_pg test -x "$dir" || die "the postgres user cannot reach $dir; give a DIR it can traverse (mkdir -m 0755 /tmp/mlf)"
      chown postgres: "$pgroot"
    fi
    chmod 0700 "$pgroot"
    as_pg "$PGBIN/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --locale C.UTF-8 --no-instructions \
      >"$dir/initdb.log" 2>&1 || { tail -20 "$dir/initdb.log" >&2; die "initdb failed; see $dir/initdb.log"; }
    echo "include_if_exists = 'local.conf'" | as_pg tee -a "$pgdata/postgresql.conf" >/dev/null
  fi
  # Written at every start, so a new PGPORT or a moved DIR take effect.
  as_pg mkdir -p "$pgrun"
  printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $pgport" \
    "unix_socket_directories = '$pgrun'" "unix_socket_permissions = 0700" \
    | as_pg tee "$pgdata/local.conf" >/dev/null
  if ! pg_running; then
    ! listening "$pgport" || die "port $pgport (PostgreSQL) is taken by another process"
    as_pg "$PGBIN/pg_ctl" start -D "$pgdata" -l "$pgroot/postgres.log" -w -t 30 >/dev/null \
      || { tail -20 "$pgroot/postgres.log" >&2; die "PostgreSQL failed to start; see $pgroot/postgres.log"; }
  fi
  if [ -n "$fresh" ] || ! as_pg "$PGBIN/psql" -h "$pgrun" -p "$pgport" -U postgres -d mlflow -c '' >/dev/null 2>&1; then
    as_pg "$PGBIN/createdb" -h "$pgrun" -p "$pgport" -U postgres mlflow
  fi
  echo "mlflow-server.sh: PostgreSQL on 127.0.0.1:$pgport ready in $(secs_since "$t0") s" >&2
}

wait_health() {  # URL SID: 0 once /health answers 200; 1 on timeout; 2 if the server died
  python3 - "$1" "$2" "$START_TIMEOUT" <<'PY'
import subprocess, sys, time, urllib.request
url, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    ps = subprocess.run(["ps", "-o", "stat=", "-s", str(pid)], capture_output=True, text=True)
    if not [s for s in ps.stdout.split() if not s.startswith("Z")]:
        sys.exit(2)
    time.sleep(0.2)
sys.exit(1)
PY
}

stop_mlflow() {
  local pid
  pid=$(mlflow_pid) || { rm -f "$dir/mlflow.pid"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    session_alive "$pid" || { rm -f "$dir/mlflow.pid"; return 0; }
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/mlflow.pid"
}

case "$cmd" in
  start)
    port=${1:-$(cat "$dir/port" 2>/dev/null || echo 5000)}
    pgport=${PGPORT:-$(cat "$dir/pgport" 2>/dev/null || free_port_but "$port")}
    uri=http://127.0.0.1:$port
    backend=postgresql+psycopg2://postgres@127.0.0.1:$pgport/mlflow
    if pid=$(mlflow_pid) && [ "$(cat "$dir/port" 2>/dev/null)" = "$port" ]; then
      echo "mlflow-server.sh: already running (pid $pid)" >&2
      echo "backend: $backend"
      echo "$uri"
      exit 0
    fi
    stop_mlflow  # one on another port
    ! listening "$port" || die "port $port (MLflow) is taken by another process"
    echo "$port" >"$dir/port"
    echo "$pgport" >"$dir/pgport"
    start_postgres "$pgport"
    mkdir -p "$dir/artifacts"
    t0=$(now_ms)
    # Its own session: `stop` signals the whole process group (the CLI and its uvicorn).
    # shellcheck disable=SC2016  # $$, $0 and $@ are the inner bash's: it writes its own pid
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/mlflow.pid" \
      "$MLFLOW" server --backend-store-uri "$backend" --artifacts-destination "$dir/artifacts" \
      --host 127.0.0.1 --port "$port" --workers 1 </dev/null >"$dir/mlflow.log" 2>&1 &
    for _ in $(seq 1 50); do [ -s "$dir/mlflow.pid" ] && break; sleep 0.1; done
    rc=0
    wait_health "$uri/health" "$(cat "$dir/mlflow.pid")" || rc=$?
    if [ "$rc" -ne 0 ]; then
      [ "$rc" -eq 1 ] && echo "mlflow-server.sh: no answer from $uri/health in ${START_TIMEOUT}s" >&2
      tail -20 "$dir/mlflow.log" >&2
      grep -q "No module named 'psycopg2'" "$dir/mlflow.log" \
        && echo "mlflow-server.sh: MLflow needs psycopg2: pip install psycopg2-binary==2.9.13" >&2
      stop_mlflow
      die "MLflow failed to start; see $dir/mlflow.log (PostgreSQL keeps running: stop DIR)"
    fi
    echo "mlflow-server.sh: MLflow on $uri ready in $(secs_since "$t0") s" >&2
    echo "backend: $backend"
    echo "$uri"
    ;;
  stop-mlflow)
    stop_mlflow
    ;;
  stop)
    stop_mlflow
    if pg_running; then
      as_pg "$PGBIN/pg_ctl" stop -D "$pgdata" -m fast -w -t 30 >/dev/null \
        || as_pg "$PGBIN/pg_ctl" stop -D "$pgdata" -m immediate -w >/dev/null || true
    fi
    # Whatever is left (a lost pid file, a wedged postmaster): anything that names DIR.
    for pid in $(pids_of "$dir/"); do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 20); do
      [ -z "$(pids_of "$dir/")" ] && exit 0
      sleep 0.25
    done
    for pid in $(pids_of "$dir/"); do kill -KILL "$pid" 2>/dev/null || true; done
    ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Starts SecantusDB (a single-node server speaking the MongoDB wire protocol, from PyPI) on
# MONGODB_HOST:MONGODB_PORT (default 127.0.0.1:27017), in memory, detached; waits (bounded)
# until it accepts connections. Does nothing when something already answers there.
# Prints the URL to use as TEST_MONGODB_URL on stdout; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

host="${MONGODB_HOST:-127.0.0.1}"
port="${MONGODB_PORT:-27017}"
log="${MONGODB_LOG:-target/secantusdb-${port}.log}"
tries="${MONGODB_WAIT_TRIES:-120}" # × 0.5 s
url="mongodb://${host}:${port}"

# A MongoDB `ping` command through pymongo (installed with SecantusDB); a plain TCP connect
# when pymongo is not there yet.
answers() {
  if python3 -c 'import pymongo' 2>/dev/null; then
    python3 - "$url" <<'EOF' >/dev/null 2>&1
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
c.admin.command("ping")
EOF
  else
    (exec 3<>"/dev/tcp/${host}/${port}") 2>/dev/null
  fi
}

if answers; then
  echo "MongoDB already answers on ${host}:${port}" >&2
  echo "$url"
  exit 0
fi

if ! command -v secantusd-py >/dev/null 2>&1; then
  # Pinned: the version CI was proven with (a pre-release; a later one may behave otherwise).
  version="${SECANTUSDB_VERSION:-0.7.0b3}"
  echo "installing SecantusDB ${version} from PyPI" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    "SecantusDB==${version}" >&2
  hash -r
  # pyenv installs console scripts behind shims that appear only after a rehash.
  command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
fi
bin="$(command -v secantusd-py || true)"
if [ -z "$bin" ]; then
  echo "secantusd-py is not on PATH after installing SecantusDB" >&2
  exit 1
fi

mkdir -p "$(dirname "$log")"
echo "starting SecantusDB on ${host}:${port} (log: ${log})" >&2
# setsid + nohup: the server outlives this script and the shell that ran it.
setsid nohup "$bin" --host "$host" --port "$port" --storage-path :memory: \
  --log-level WARNING >"$log" 2>&1 </dev/null &
pid=$!

for _ in $(seq 1 "$tries"); do
  if answers; then
    echo "SecantusDB is up (pid ${pid})" >&2
    echo "$url"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "SecantusDB exited; its log:" >&2
    tail -n 40 "$log" >&2 || true
    exit 1
  fi
  sleep 0.5
done
echo "SecantusDB did not accept connections on ${host}:${port} in time; its log:" >&2
tail -n 40 "$log" >&2 || true
exit 1

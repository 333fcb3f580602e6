#!/usr/bin/env bash
# Conformance, as client authors meet Arena: the graphql-http server audit (fails on any
# MUST or SHOULD), the graphql-transport-ws protocol with the `ws` and `graphql-ws` clients
# (and the legacy subprotocol), GraphQL over SSE with the `graphql-sse` client in both modes
# and @live queries (SSE and WebSocket), @defer/@stream with meros, Apollo Client, JSON-only,
# WebSocket and SSE clients, and GraphiQL end to end in headless Chromium (screenshot:
# target/graphiql.png). Installs what they need, runs Arena (debug build, embedded backends,
# a port of its own), runs every suite even when one fails, and exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

if [ ! -x /usr/bin/chromium ]; then
  echo "conformance: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null || { echo "conformance: node (>= 20) is required"; exit 1; }
(cd conformance && npm ci --no-audit --no-fund --loglevel=error)

cargo build --bin arena
work="$(mktemp -d)"
log="$work/arena.log"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Port 0: Arena picks a free port and logs it. Embedded backends only, whatever the caller's
# environment says; cheap hashing, as the tests use.
env -u REDIS_URL -u MONGODB_URL -u ARENA_STORAGE_REDIS_URL -u ARENA_GRAPHIQL_ASSETS \
  DATABASE_URL="sqlite://$work/arena.db?mode=rwc" ARENA_ADDR=127.0.0.1:0 \
  ARENA_LOG=info ARENA_LOG_JSON=true ARENA_PBKDF2_ITERATIONS=10000 ARENA_SYNC_ENABLED=false \
  "$root/target/debug/arena" serve >"$log" 2>&1 &
server=$!
addr=""
for _ in $(seq 1 120); do
  addr="$(grep -o '"addr":"[^"]*"' "$log" | head -n1 | cut -d'"' -f4 || true)"
  [ -n "$addr" ] && curl -fsS "http://$addr/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "conformance: Arena did not start"; exit 1; }
  sleep 0.5
done
[ -n "$addr" ] || { cat "$log"; echo "conformance: Arena did not report its address"; exit 1; }
export ARENA_URL="http://$addr/graphql"
echo "conformance: Arena at $ARENA_URL"

failed_suites=()
passed=0
failed=0
run() {
  local name="$1"; shift
  echo "== $name"
  local out="$work/$name.out" status=0
  (cd conformance && timeout 600 "$@") 2>&1 | tee "$out" || status=$?
  # Each suite closes with "N passed, M failed".
  local counts
  counts="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n1 || true)"
  if [ -n "$counts" ]; then
    passed=$((passed + $(echo "$counts" | cut -d' ' -f1)))
    failed=$((failed + $(echo "$counts" | cut -d' ' -f3)))
  fi
  if [ "$status" -ne 0 ] || [ -z "$counts" ]; then
    failed_suites+=("$name")
    if [ -z "$counts" ]; then failed=$((failed + 1)); fi
  fi
}
run graphql-http-audit node audit.mjs
run graphql-transport-ws node ws.mjs
run graphql-sse node sse.mjs
run defer-stream node defer.mjs
run graphiql node graphiql.mjs --screenshot "$root/target/graphiql.png"

if [ "${#failed_suites[@]}" -gt 0 ]; then
  echo "conformance FAILED: ${failed_suites[*]}"
  echo "--- last lines of the Arena log"
  tail -n 20 "$log"
fi
echo "conformance: $passed passed, $failed failed"
[ "${#failed_suites[@]}" -eq 0 ]

#!/usr/bin/env python3
"""Instructions per request of Arena's read path, counted by callgrind.

Starts the release `arena` under `valgrind --tool=callgrind` (embedded backends, or
PostgreSQL + Redis), creates a user and a meal, then for each scenario (`{ __typename }`,
warm `meal(id)`, the same as a persisted query by its hash alone) sends 200 unmeasured and
`N` measured requests over one keep-alive connection, twice. The figure is the inclusive
count of the connection tasks (`axum::serve::handle_connection`) divided by `N`: the
request's own work, without background tasks (usage flushes, lease renewals) whose cost
depends on wall time. Instructions hold still where CPU time on a shared machine does not.

    cargo build --release --bins
    python3 scripts/callgrind_requests.py embedded
    python3 scripts/callgrind_requests.py redis      # PostgreSQL + Redis on 127.0.0.1

Environment: `N` (default 2000); `CG_ENV="ARENA_X=1 ARENA_Y=2"` adds server settings (for
example `ARENA_RESPONSE_MEMO=0` to execute every query); `KEEP=1` keeps the callgrind files
(in a temporary directory it prints) for `callgrind_annotate --inclusive=yes`.
"""

import glob
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

MEAL = "query($id: ID!) { meal(id: $id) { id name cuisine price difficulty battles wins winPct } }"


def dumps(v):
    # Compact, as JavaScript clients and serde_json send it.
    return json.dumps(v, separators=(",", ":"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "embedded"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "target/release/arena")
    n = int(os.environ.get("N", "2000"))
    out = tempfile.mkdtemp(prefix=f"arena-callgrind-{mode}-")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ARENA_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        ARENA_ADDR=f"127.0.0.1:{port}",
        ARENA_PBKDF2_ITERATIONS="1000",
        ARENA_LOG="warn",
        ARENA_SYNC_ENABLED="false",
    )
    for kv in os.environ.get("CG_ENV", "").split():
        k, v = kv.split("=", 1)
        env[k] = v
    db = None
    if mode == "embedded":
        env["DATABASE_URL"] = f"sqlite://{out}/db.sqlite?mode=rwc"
    else:
        db = f"arena_callgrind_{os.getpid()}"
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"],
            check=True,
            capture_output=True,
        )
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{db}"
        env["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
        env["ARENA_CACHE_PREFIX"] = f"callgrind{os.getpid()}:"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", "--dump-instr=no", binary, "serve"],
        env=env,
        cwd=out,
        stdout=open(f"{out}/log", "w"),
        stderr=subprocess.STDOUT,
    )
    conn = None
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            break
        except OSError:
            time.sleep(0.2)

    def post(body, token=None):
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn.request("POST", "/graphql", body=body, headers=headers)
        return json.loads(conn.getresponse().read())

    post(dumps({"query": 'mutation { createUser(username: "bench", password: "password123") { id } }'}))
    token = post(dumps({"query": 'mutation { login(username: "bench", password: "password123") { token } }'}))
    token = token["data"]["login"]["token"]
    meal = post(
        dumps({"query": 'mutation { createMeal(input: { name: "Bench Pad Thai", cuisine: "Thai", price: 11, difficulty: MED }) { id } }'}),
        token,
    )["data"]["createMeal"]["id"]
    h = hashlib.sha256(MEAL.encode()).hexdigest()
    apq = {"persistedQuery": {"version": 1, "sha256Hash": h}}
    bodies = {
        "typename": dumps({"query": "{ __typename }"}),
        "meal": dumps({"query": MEAL, "variables": {"id": meal}}),
        "persisted": dumps({"extensions": apq, "variables": {"id": meal}}),
    }
    post(dumps({"query": MEAL, "variables": {"id": meal}, "extensions": apq}))

    dumped = [0]

    def measured():
        """Dumps the counts so far; the connection tasks' instructions since the last dump."""
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], capture_output=True)
        dumped[0] += 1
        path = f"{out}/cg.{server.pid}.{dumped[0]}"
        for _ in range(100):
            if os.path.exists(path) and os.path.getsize(path) > 0:
                break
            time.sleep(0.1)
        time.sleep(0.3)
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
            capture_output=True,
            text=True,
        ).stdout
        total = 0
        for line in annotated.splitlines():
            if "axum::serve::handle_connection::{{closure}}::{{closure}} " in line:
                total = int(line.split()[0].replace(",", ""))
                break
        if not os.environ.get("KEEP"):
            os.remove(path)
        return total

    results = {}
    for _ in range(2):
        for name, body in bodies.items():
            for _ in range(200):
                post(body)
            measured()
            for _ in range(n):
                r = post(body)
                assert "errors" not in r, r
            results.setdefault(name, []).append(measured() / n)
    server.terminate()
    server.wait()
    if db:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE {db}"],
            capture_output=True,
        )
    for name, per in results.items():
        print(f"{mode} {name}: " + " / ".join(f"{x / 1000:.1f}k" for x in per) + " instructions per request")
    meal_, typename, persisted = (min(results[k]) for k in ("meal", "typename", "persisted"))
    print(f"{mode} meal ÷ typename: {meal_ / typename:.3f}×; persisted ÷ full: {persisted / meal_:.3f}×")
    if os.environ.get("KEEP"):
        print(f"callgrind files kept in {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Starts a three-node Redis Cluster (three masters, no replicas, nothing on disk) on
# 127.0.0.1 and prints, on stdout, the URL Arena (fred 10.1 `Config::from_url`) takes:
#   redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3
# Ports: REDIS_CLUSTER_PORTS="P1 P2 P3" (default 7101 7102 7103; free ones are picked when
# these are taken by something that is not this cluster). Re-runnable: when the three nodes
# already form a healthy cluster, it only prints the URL. Everything else goes to stderr.
# REDIS_CLUSTER_DIR (default /tmp/arena-redis-cluster) holds nodes.conf files and logs.
set -euo pipefail

dir="${REDIS_CLUSTER_DIR:-/tmp/arena-redis-cluster}"
# The ports a previous run settled on (kept in $dir/ports) win over the defaults.
default_ports="7101 7102 7103"
[ -s "$dir/ports" ] && default_ports="$(cat "$dir/ports")"
read -r -a ports <<<"${REDIS_CLUSTER_PORTS:-$default_ports}"
[ "${#ports[@]}" -eq 3 ] || { echo "REDIS_CLUSTER_PORTS needs three ports" >&2; exit 1; }
tries="${REDIS_CLUSTER_WAIT_TRIES:-120}" # × 0.5 s

cli() { local p="$1"; shift; redis-cli -h 127.0.0.1 -p "$p" "$@"; }
answers() { cli "$1" ping 2>/dev/null | grep -q PONG; }
cluster_ok() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | grep -q '^cluster_state:ok$'; }
known_nodes() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }
is_cluster_node() { cli "$1" info cluster 2>/dev/null | tr -d '\r' | grep -q '^cluster_enabled:1$'; }
url() { echo "redis-cluster://127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"; }

# Already up and healthy: nothing to do.
healthy=1
for p in "${ports[@]}"; do
  if ! cluster_ok "$p" || [ "$(known_nodes "$p")" != 3 ]; then healthy=0; fi
done
if [ "$healthy" = 1 ]; then
  echo "Redis Cluster already up on ports ${ports[*]}" >&2
  url
  exit 0
fi

# A port taken by something else (not a cluster node of ours): pick free ports instead.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for i in 0 1 2; do
  p="${ports[$i]}"
  if answers "$p" && ! is_cluster_node "$p"; then
    ports[$i]="$(free_port)"
    echo "port $p is taken by a non-cluster Redis; using ${ports[$i]}" >&2
  elif ! answers "$p" && (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    ports[$i]="$(free_port)"
    echo "port $p is taken by something else; using ${ports[$i]}" >&2
  fi
done

# Nodes of an earlier, broken attempt: stop them and start over (nothing on disk to keep).
for p in "${ports[@]}"; do
  if answers "$p"; then
    echo "restarting the cluster node on $p (cluster not healthy)" >&2
    cli "$p" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do answers "$p" || break; sleep 0.25; done
  fi
done

mkdir -p "$dir"
echo "${ports[*]}" >"$dir/ports"
for p in "${ports[@]}"; do
  rm -f "$dir/nodes-$p.conf"
  redis-server --bind 127.0.0.1 --port "$p" \
    --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 5000 \
    --dir "$dir" --save "" --appendonly no \
    --daemonize yes --logfile "$dir/redis-$p.log" --pidfile "$dir/redis-$p.pid"
done
for p in "${ports[@]}"; do
  for _ in $(seq 1 "$tries"); do answers "$p" && break; sleep 0.5; done
  answers "$p" || { echo "cluster node on $p did not start; log:" >&2; tail -n 20 "$dir/redis-$p.log" >&2; exit 1; }
done

echo "creating the cluster on ports ${ports[*]}" >&2
redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
  --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 ||
  { echo "redis-cli --cluster create failed:" >&2; cat "$dir/create.log" >&2; exit 1; }

for _ in $(seq 1 "$tries"); do
  ok=1
  for p in "${ports[@]}"; do
    if ! cluster_ok "$p" || [ "$(known_nodes "$p")" != 3 ]; then ok=0; fi
  done
  if [ "$ok" = 1 ]; then
    echo "Redis Cluster is up (cluster_state:ok on ${ports[*]})" >&2
    url
    exit 0
  fi
  sleep 0.5
done
echo "the cluster did not reach cluster_state:ok in time" >&2
for p in "${ports[@]}"; do cli "$p" cluster info >&2 || true; done
exit 1

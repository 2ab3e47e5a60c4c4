#!/usr/bin/env bash
# The chat demo as three nodes (127.0.0.1:3001..3003) behind nginx on http://127.0.0.1:3000,
# round-robin, sharing state through Redis (default) or NATS:
#
#   bash scripts/chat-cluster.sh [redis|nats]
#
# REDIS_URL / NATS_URL override the engine's URL (redis://127.0.0.1:6379, nats://127.0.0.1:4222).
# Runs in the foreground; Ctrl-C stops the nodes and nginx. nginx's files (access.log with the
# node of each request) are in a temp dir, printed at start.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${1:-redis}
case "$engine" in
  redis) flag=(--redis "${REDIS_URL:-redis://127.0.0.1:6379}") ;;
  nats) flag=(--nats "${NATS_URL:-nats://127.0.0.1:4222}") ;;
  *) echo "usage: $0 [redis|nats]" >&2; exit 2 ;;
esac
command -v nginx >/dev/null || { echo "nginx missing: apt-get install nginx" >&2; exit 1; }

cargo build -q -p chat
bin="${CARGO_TARGET_DIR:-target}/debug/chat"
prefix=$(mktemp -d /tmp/chat-nginx.XXXXXX)

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

for port in 3001 3002 3003; do
  "$bin" --addr "127.0.0.1:$port" "${flag[@]}" &
  pids+=("$!")
done
nginx -e stderr -c "$PWD/examples/chat/nginx/chat-cluster.conf" -p "$prefix/" &
pids+=("$!")
echo "==> open http://127.0.0.1:3000 in two browsers (nginx files: $prefix; Ctrl-C stops all)"
wait -n "${pids[@]}"

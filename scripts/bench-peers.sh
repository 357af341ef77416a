#!/usr/bin/env bash
# Measure other MCP proxies the way `mcpgw bench` measures the gateway, for
# the peer table in BENCHMARKS.md: each proxy fronts the same go-sdk echo
# upstream (`mcpgw bench-upstream`; over stdio for proxies that front only
# stdio servers) and `mcpgw bench --target` drives tools/call through it,
# against direct calls to the upstream, reading the proxy's CPU from its pid.
# Not run in CI: it installs third-party software.
#
# Usage:
#   MCPGW_BIN=./mcpgw scripts/bench-peers.sh
#
# Env:
#   MCPGW_BIN      mcpgw binary (required)
#   THV            toolhive's thv binary (default: thv on PATH; skipped if none).
#                  Install: go install github.com/stacklok/toolhive/cmd/thv@v0.47.0
#   PEERS          proxies to measure (default: "mcpgw thv mcp-proxy supergateway")
#   BENCH_ARGS     extra `mcpgw bench` flags (default: "--duration 10s")
#   CACHE          cache dir for Node 22 and the npm packages (default: <repo>/.cache)
#   MCP_PROXY_VERSION, SUPERGATEWAY_VERSION  npm versions (default: 6.7.19, 4.0.0)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${CACHE:-$REPO/.cache}"
: "${MCPGW_BIN:?set MCPGW_BIN to the mcpgw binary}"
MCPGW_BIN="$(cd "$(dirname "$MCPGW_BIN")" && pwd)/$(basename "$MCPGW_BIN")"
PEERS="${PEERS:-mcpgw thv mcp-proxy supergateway}"
read -r -a BENCH_ARGS <<<"${BENCH_ARGS:---duration 10s}"
MCP_PROXY_VERSION="${MCP_PROXY_VERSION:-6.7.19}"
SUPERGATEWAY_VERSION="${SUPERGATEWAY_VERSION:-4.0.0}"

log() { echo "bench-peers: $*" >&2; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL: until something answers on URL's port (any HTTP status).
wait_http() {
	local deadline=$((SECONDS + 60))
	until curl -s -o /dev/null "$1"; do
		if ((SECONDS > deadline)); then
			log "nothing answers on $1"
			return 1
		fi
		sleep 0.2
	done
}

PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

TMP="$(mktemp -d)"
UP_PORT="$(free_port)"
"$MCPGW_BIN" bench-upstream --addr "127.0.0.1:$UP_PORT" >"$TMP/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
UP="http://127.0.0.1:$UP_PORT"
wait_http "$UP/mcp"
STDIO_UPSTREAM="$MCPGW_BIN bench-upstream --stdio"

need_npm() {
	NODE="$("$SCRIPT_DIR/node22.sh" | tail -n1)"
	export PATH="$(dirname "$NODE"):$PATH"
	local dir="$CACHE/bench-peers"
	if [[ ! -x "$dir/node_modules/.bin/mcp-proxy" || ! -x "$dir/node_modules/.bin/supergateway" ]]; then
		mkdir -p "$dir"
		log "installing mcp-proxy@$MCP_PROXY_VERSION supergateway@$SUPERGATEWAY_VERSION into $dir"
		(cd "$dir" && npm init -y >/dev/null && npm install --no-audit --no-fund "mcp-proxy@$MCP_PROXY_VERSION" "supergateway@$SUPERGATEWAY_VERSION" >&2)
	fi
	NPM_BIN="$dir/node_modules/.bin"
}

# measure NAME URL PID: one bench run against the proxy at URL.
measure() {
	log "$1: $(uptime)"
	echo "== $1"
	"$MCPGW_BIN" bench --upstream "$UP" --upstream-pid "$UP_PID" --target "$2" --target-pid "$3" "${BENCH_ARGS[@]}"
}

for peer in $PEERS; do
	port="$(free_port)"
	case "$peer" in
	mcpgw)
		# The gateway itself, measured by its own targets.
		log "mcpgw: $(uptime)"
		echo "== mcpgw"
		"$MCPGW_BIN" bench --upstream "$UP" --upstream-pid "$UP_PID" --targets direct,ws,unix,http "${BENCH_ARGS[@]}"
		continue
		;;
	thv)
		THV="${THV:-$(command -v thv || true)}"
		if [[ -z "$THV" ]]; then
			log "no thv: skipped (go install github.com/stacklok/toolhive/cmd/thv@v0.47.0)"
			continue
		fi
		KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=1 TOOLHIVE_SKIP_UPDATE_CHECK=true \
			"$THV" proxy --host 127.0.0.1 --port "$port" --target-uri "$UP" bench >"$TMP/thv.log" 2>&1 &
		pid=$!
		url="http://127.0.0.1:$port/mcp"
		;;
	mcp-proxy)
		need_npm
		"$NPM_BIN/mcp-proxy" --host 127.0.0.1 --port "$port" --server stream -- $STDIO_UPSTREAM >"$TMP/mcp-proxy.log" 2>&1 &
		pid=$!
		url="http://127.0.0.1:$port/mcp"
		;;
	supergateway)
		need_npm
		"$NPM_BIN/supergateway" --stdio "$STDIO_UPSTREAM" --outputTransport streamableHttp --stateful \
			--port "$port" --logLevel none >"$TMP/supergateway.log" 2>&1 &
		pid=$!
		url="http://127.0.0.1:$port/mcp"
		;;
	*)
		log "unknown peer $peer"
		exit 2
		;;
	esac
	PIDS+=("$pid")
	wait_http "$url"
	measure "$peer" "$url" "$pid"
	kill "$pid" 2>/dev/null || true
done

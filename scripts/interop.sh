#!/usr/bin/env bash
# Interop check with an MCP client written outside this project: the official
# TypeScript SDK connects to the gateway's WebSocket endpoint and calls a
# tool on a real MCP server behind it.
#
# Usage: MCPGW_BIN=/path/to/mcpgw scripts/interop.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
MCPGW_BIN="${MCPGW_BIN:?set MCPGW_BIN to the mcpgw binary}"

log() { echo "interop: $*" >&2; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-interop.XXXXXX")"
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http NAME PID URL: poll URL until it answers, the process dies, or 30s pass.
wait_http() {
	local name="$1" pid="$2" url="$3" deadline=$((SECONDS + 30))
	until curl -s -o /dev/null "$url"; do
		kill -0 "$pid" 2>/dev/null || { log "$name exited early"; return 1; }
		((SECONDS < deadline)) || { log "$name did not answer at $url within 30s"; return 1; }
		sleep 0.1
	done
}

"$SCRIPT_DIR/ts-interop.sh" --install-only

(cd "$REPO" && go build -o "$TMP/echoserver" ./examples/echoserver)
upport="$(free_port)"
"$TMP/echoserver" -addr "127.0.0.1:$upport" >"$TMP/echoserver.log" 2>&1 &
PIDS+=($!)
wait_http echoserver "${PIDS[-1]}" "http://127.0.0.1:$upport/mcp"

gwport="$(free_port)"
adminport="$(free_port)"
"$MCPGW_BIN" serve --data-dir "$TMP/data" --vault-key "$TMP/vault.key" --http "127.0.0.1:$gwport" --admin "127.0.0.1:$adminport" >"$TMP/mcpgw.log" 2>&1 &
PIDS+=($!)
wait_http mcpgw "${PIDS[-1]}" "http://127.0.0.1:$adminport/healthz"
"$MCPGW_BIN" route add --admin "http://127.0.0.1:$adminport" --data-dir "$TMP/data" echo "http://127.0.0.1:$upport/mcp" >&2

MCPGW_TOKEN="$("$MCPGW_BIN" token issue --admin "http://127.0.0.1:$adminport" --data-dir "$TMP/data" --service interop --org interop --ttl 10m)"
export MCPGW_TOKEN
target="http://127.0.0.1:$upport/mcp"
url="ws://127.0.0.1:$gwport/v1/mcp?target=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$target")&org=interop&account=interop"
out="$("$SCRIPT_DIR/ts-interop.sh" "$url" echo '{"text":"hello from typescript"}')" || {
	log "TypeScript client failed; gateway log:"
	tail -n 20 "$TMP/mcpgw.log" >&2
	exit 1
}
want='{"content":[{"type":"text","text":"hello from typescript"}]}'
if [[ "$out" != "$want" ]]; then
	log "unexpected result: $out (want $want)"
	exit 1
fi
echo "interop: 1 passed, 0 failed (TypeScript SDK over WebSocket: echo returned the exact text)"

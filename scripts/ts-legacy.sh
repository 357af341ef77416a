#!/usr/bin/env bash
# Interop check with a legacy client: the TypeScript MCP SDK 1.0.x
# SSEClientTransport (HTTP+SSE, protocol 2024-11-05) connects to the
# gateway's /v1/sse endpoint and calls a tool on a real MCP server behind it.
#
# Usage: MCPGW_BIN=/path/to/mcpgw scripts/ts-legacy.sh
#
# Dependencies are installed with `npm ci` from the committed
# scripts/ts-legacy/package-lock.json into $CACHE/ts-legacy (not into the
# source tree); reinstalled only when the lockfile changes.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${CACHE:-$REPO/.cache}"
SRC="$SCRIPT_DIR/ts-legacy"
DEST="$CACHE/ts-legacy"
MCPGW_BIN="${MCPGW_BIN:?set MCPGW_BIN to the mcpgw binary}"

log() { echo "ts-legacy: $*" >&2; }

command -v node >/dev/null 2>&1 || { log "no node found"; exit 1; }
command -v npm >/dev/null 2>&1 || { log "npm not found"; exit 1; }

mkdir -p "$DEST"
stamp="$DEST/.installed-lock.sha256"
want="$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" || ! -d "$DEST/node_modules/@modelcontextprotocol/sdk" ]]; then
	log "installing dependencies into $DEST"
	cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/.npmrc" "$DEST/"
	(cd "$DEST" && npm ci --no-audit --no-fund --loglevel=error) >&2
	echo "$want" >"$stamp"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-ts-legacy.XXXXXX")"
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

MCPGW_TOKEN="$("$MCPGW_BIN" token issue --admin "http://127.0.0.1:$adminport" --data-dir "$TMP/data" --service legacy --org legacy --ttl 10m)"
export MCPGW_TOKEN
url="http://127.0.0.1:$gwport/v1/sse/echo?org=legacy&account=legacy"
out="$(TS_LEGACY_DEPS="$DEST" node "$SRC/client.mjs" "$url" echo '{"text":"hello from an old client"}')" || {
	log "legacy TypeScript client failed; gateway log:"
	tail -n 20 "$TMP/mcpgw.log" >&2
	exit 1
}
want='{"content":[{"type":"text","text":"hello from an old client"}]}'
if [[ "$out" != "$want" ]]; then
	log "unexpected result: $out (want $want)"
	exit 1
fi
echo "ts-legacy: 1 passed, 0 failed (TypeScript SDK 1.0.x over HTTP+SSE /v1/sse: echo returned the exact text)"

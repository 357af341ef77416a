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

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SRC="$SCRIPT_DIR/ts-legacy"
DEST="$CACHE/ts-legacy"
MCPGW_BIN="${MCPGW_BIN:?set MCPGW_BIN to the mcpgw binary}"

need node curl python3
npm_ci_once "$SRC" "$DEST" node_modules/@modelcontextprotocol/sdk
make_tmp ts-legacy

start_echoserver
start_mcpgw "$TMP"
mcpgw_route_add "$TMP" echo "$ECHO_URL"
MCPGW_TOKEN="$(mcpgw_token "$TMP" legacy 10m)"
export MCPGW_TOKEN
url="$GW_URL/v1/sse/echo?org=legacy&account=legacy"
out="$(TS_LEGACY_DEPS="$DEST" node "$SRC/client.mjs" "$url" echo '{"text":"hello from an old client"}')" || {
	log "legacy TypeScript client failed; gateway log:"
	tail -n 20 "$TMP/mcpgw.log" >&2
	exit 1
}
want='{"content":[{"type":"text","text":"hello from an old client"}]}'
if [[ "$out" != "$want" ]]; then
	die "unexpected result: $out (want $want)"
fi
echo "ts-legacy: 1 passed, 0 failed (TypeScript SDK 1.0.x over HTTP+SSE /v1/sse: echo returned the exact text)"

#!/usr/bin/env bash
# Interop check with an MCP client written outside this project: the official
# TypeScript SDK connects to the gateway's WebSocket endpoint and calls a
# tool on a real MCP server behind it.
#
# Usage: MCPGW_BIN=/path/to/mcpgw scripts/interop.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MCPGW_BIN="${MCPGW_BIN:?set MCPGW_BIN to the mcpgw binary}"

need curl python3
make_tmp interop

"$SCRIPT_DIR/ts-interop.sh" --install-only

start_echoserver
start_mcpgw "$TMP"
mcpgw_route_add "$TMP" echo "$ECHO_URL"
MCPGW_TOKEN="$(mcpgw_token "$TMP" interop 10m)"
export MCPGW_TOKEN
url="ws://${GW_URL#http://}/v1/mcp?target=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$ECHO_URL")&org=interop&account=interop"
out="$("$SCRIPT_DIR/ts-interop.sh" "$url" echo '{"text":"hello from typescript"}')" || {
	log "TypeScript client failed; gateway log:"
	tail -n 20 "$TMP/mcpgw.log" >&2
	exit 1
}
want='{"content":[{"type":"text","text":"hello from typescript"}]}'
if [[ "$out" != "$want" ]]; then
	die "unexpected result: $out (want $want)"
fi
echo "interop: 1 passed, 0 failed (TypeScript SDK over WebSocket: echo returned the exact text)"

#!/usr/bin/env bash
# Measure how often a server-to-client request made right after connect is
# lost: the TypeScript SDK reference server (scripts/ts-reference-server) sends
# sampling/createMessage (or elicitation/create) on its standalone GET stream,
# as the TypeScript SDK does for requests not tied to a POST, and drops it when
# that stream is not open yet. scripts/ts-interop/loss.mjs opens LOSS_TRIES
# sessions per path and calls the tool right after connect:
#   direct        TypeScript SDK client -> server (streamable HTTP)
#   gateway-http  client -> mcpgw named route (streamable HTTP) -> server
#   gateway-ws    client -> mcpgw WebSocket endpoint -> server
#
# Usage: MCPGW_BIN=/path/to/mcpgw scripts/server-request-loss.sh
#
# Env:
#   LOSS_SERVER      ts (default) or go: the go-sdk everything-server, which
#                    sends its requests on the POST stream of the tool call
#   LOSS_TRIES       sessions per path (default 20)
#   LOSS_TOOL        test_sampling (default), test_elicitation, ...
#   LOSS_REQUEST_MS  how long the server waits for the client's answer before
#                    counting the request as lost (default 3000)
#   LOSS_TIMEOUT_MS  per-try client deadline; past it the try is hung (default 15000)
#   CACHE            cache dir (default: <repo>/.cache)
# Prints one "loss [PATH]: ..." line per path. A measurement: exit 0 unless
# something could not be started.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MCPGW_BIN="${MCPGW_BIN:?set MCPGW_BIN to the mcpgw binary}"
LOSS_SERVER="${LOSS_SERVER:-ts}"
LOSS_TRIES="${LOSS_TRIES:-20}"
LOSS_TOOL="${LOSS_TOOL:-test_sampling}"
LOSS_REQUEST_MS="${LOSS_REQUEST_MS:-3000}"
LOSS_TIMEOUT_MS="${LOSS_TIMEOUT_MS:-15000}"

make_tmp loss
require_node22
need curl

"$SCRIPT_DIR/ts-interop.sh" --install-only
upport="$(free_port)"
upstream="http://127.0.0.1:$upport/mcp"
case "$LOSS_SERVER" in
ts)
	"$SCRIPT_DIR/ts-reference-server.sh" --install-only
	TS_REFERENCE_SERVER_REQUEST_TIMEOUT_MS="$LOSS_REQUEST_MS" "$SCRIPT_DIR/ts-reference-server.sh" --port "$upport" >"$TMP/server.log" 2>&1 &
	;;
go)
	# The everything-server waits for the client's answer as long as the tool
	# call lasts, so a lost request shows as hung.
	(cd "$REPO" && go build -mod=readonly -o "$TMP/everything-server" github.com/modelcontextprotocol/go-sdk/conformance/everything-server)
	"$TMP/everything-server" -http="127.0.0.1:$upport" -stateless=false >"$TMP/server.log" 2>&1 &
	;;
*)
	log "LOSS_SERVER must be ts or go, got '$LOSS_SERVER'"
	exit 2
	;;
esac
PIDS+=($!)
wait_http "$LOSS_SERVER-server" "${PIDS[-1]}" "$upstream"

start_mcpgw "$TMP"
mcpgw_route_add "$TMP" loss "$upstream"
MCPGW_TOKEN="$(mcpgw_token "$TMP" loss 1h)"

target="$("$NODE" -p 'encodeURIComponent(process.argv[1])' "$upstream")"
measure() {
	local label="$1" url="$2" token="$3"
	MCPGW_TOKEN="$token" TS_INTEROP_DEPS="$CACHE/ts-interop" "$NODE" "$SCRIPT_DIR/ts-interop/loss.mjs" \
		--label "$label" --url "$url" --tries "$LOSS_TRIES" --tool "$LOSS_TOOL" --timeout-ms "$LOSS_TIMEOUT_MS"
}
log "server $LOSS_SERVER, $LOSS_TRIES tries per path, tool $LOSS_TOOL, server gives the client ${LOSS_REQUEST_MS} ms to answer"
measure direct "$upstream" ""
measure gateway-http "$GW_URL/v1/mcp/loss?org=loss&account=loss" "$MCPGW_TOKEN"
measure gateway-ws "ws://${GW_URL#http://}/v1/mcp?target=$target&org=loss&account=loss" "$MCPGW_TOKEN"

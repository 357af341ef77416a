#!/usr/bin/env bash
# Run the TypeScript MCP SDK interop client (scripts/ts-interop/client.mjs)
# against an mcpgw WebSocket endpoint.
#
# Usage:
#   scripts/ts-interop.sh WS_URL TOOL [JSON_ARGS]
#   scripts/ts-interop.sh --install-only
#
#   WS_URL  e.g. ws://127.0.0.1:8080/v1/mcp?target=<url>&org=<org>&account=<account>
#
# Env:
#   MCPGW_TOKEN       service token (sent as the access_token query parameter)
#   MCPGW_TIMEOUT_MS  overall client deadline in ms (default 20000)
#   CACHE             cache dir (default: <repo>/.cache)
#
# Dependencies are installed with `npm ci` from the committed package-lock.json
# into $CACHE/ts-interop (not into the source tree); reinstalled only when the
# lockfile changes. The client needs a global WebSocket: Node >= 22 (from
# scripts/node22.sh), else Node 20.10+ with --experimental-websocket.
# The tools/call result is printed as JSON on stdout; exit 1 on any error.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SRC="$SCRIPT_DIR/ts-interop"
DEST="$CACHE/ts-interop"

install_only=0
if [[ "${1:-}" == "--install-only" ]]; then
	install_only=1
	shift
elif [[ $# -lt 2 ]]; then
	echo "usage: $0 WS_URL TOOL [JSON_ARGS] | --install-only" >&2
	exit 2
fi

# Pick a node: >= 22 if we can get one, else a Node 20.10+ with the
# experimental WebSocket flag.
NODE_FLAGS=()
if NODE="$("$SCRIPT_DIR/node22.sh" 2>/dev/null | tail -n1)" && [[ -x "$NODE" ]]; then
	:
elif command -v node >/dev/null 2>&1; then
	NODE="$(command -v node)"
	ver="$("$NODE" --version)"
	ver="${ver#v}"
	major="${ver%%.*}"
	minor="${ver#*.}"
	minor="${minor%%.*}"
	if ((major < 20 || (major == 20 && minor < 10))); then
		die "need Node >= 22 (or 20.10+), have v$ver"
	fi
	NODE_FLAGS=(--experimental-websocket)
else
	die "no node found"
fi
npm_ci_once "$SRC" "$DEST" node_modules/@modelcontextprotocol/sdk

if ((install_only)); then
	log "installed ($(package_version "$DEST/node_modules/@modelcontextprotocol/sdk/package.json") of @modelcontextprotocol/sdk)"
	exit 0
fi

TS_INTEROP_DEPS="$DEST" exec "$NODE" "${NODE_FLAGS[@]}" "$SRC/client.mjs" "$@"

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

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${CACHE:-$REPO/.cache}"
SRC="$SCRIPT_DIR/ts-interop"
DEST="$CACHE/ts-interop"

log() { echo "ts-interop: $*" >&2; }

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
		log "need Node >= 22 (or 20.10+), have v$ver"
		exit 1
	fi
	NODE_FLAGS=(--experimental-websocket)
else
	log "no node found"
	exit 1
fi
command -v npm >/dev/null 2>&1 || {
	log "npm not found"
	exit 1
}

# Install (idempotent: keyed on the lockfile's checksum).
mkdir -p "$DEST"
stamp="$DEST/.installed-lock.sha256"
want="$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" || ! -d "$DEST/node_modules/@modelcontextprotocol/sdk" ]]; then
	log "installing dependencies into $DEST"
	cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/.npmrc" "$DEST/"
	(cd "$DEST" && PATH="$(dirname "$NODE"):$PATH" npm ci --no-audit --no-fund --loglevel=error) >&2
	echo "$want" >"$stamp"
fi

if ((install_only)); then
	log "installed ($("$NODE" -p 'require(process.argv[1]).version' "$DEST/node_modules/@modelcontextprotocol/sdk/package.json") of @modelcontextprotocol/sdk)"
	exit 0
fi

TS_INTEROP_DEPS="$DEST" exec "$NODE" "${NODE_FLAGS[@]}" "$SRC/client.mjs" "$@"

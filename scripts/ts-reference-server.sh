#!/usr/bin/env bash
# Run this project's TypeScript SDK reference server
# (scripts/ts-reference-server/server.mjs), which answers the MCP conformance
# suite's server scenarios.
#
# Usage:
#   scripts/ts-reference-server.sh [--port N]
#   scripts/ts-reference-server.sh --install-only
#
# Env:
#   CACHE  cache dir (default: <repo>/.cache)
#
# Dependencies are installed with `npm ci` from the committed package-lock.json
# into $CACHE/ts-reference-server (not into the source tree); reinstalled only
# when the lockfile changes.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${CACHE:-$REPO/.cache}"
SRC="$SCRIPT_DIR/ts-reference-server"
DEST="$CACHE/ts-reference-server"

log() { echo "ts-reference-server: $*" >&2; }

NODE="$("$SCRIPT_DIR/node22.sh" | tail -n1)"
[[ -x "$NODE" ]] || {
	log "no node >= 22 (got '$NODE')"
	exit 1
}
command -v npm >/dev/null 2>&1 || {
	log "npm not found"
	exit 1
}

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

if [[ "${1:-}" == "--install-only" ]]; then
	log "installed ($("$NODE" -p 'require(process.argv[1]).version' "$DEST/node_modules/@modelcontextprotocol/sdk/package.json") of @modelcontextprotocol/sdk)"
	exit 0
fi

TS_REFERENCE_SERVER_DEPS="$DEST" exec "$NODE" "$SRC/server.mjs" "$@"

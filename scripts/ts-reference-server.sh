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

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SRC="$SCRIPT_DIR/ts-reference-server"
DEST="$CACHE/ts-reference-server"

require_node22
npm_ci_once "$SRC" "$DEST" node_modules/@modelcontextprotocol/sdk

if [[ "${1:-}" == "--install-only" ]]; then
	log "installed ($(package_version "$DEST/node_modules/@modelcontextprotocol/sdk/package.json") of @modelcontextprotocol/sdk)"
	exit 0
fi

TS_REFERENCE_SERVER_DEPS="$DEST" exec "$NODE" "$SRC/server.mjs" "$@"

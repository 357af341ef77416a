# shellcheck shell=bash disable=SC2034 # what it sets is read by the scripts that source it
# Helpers for the scripts under scripts/: logging, a temp dir with a cleanup
# trap that stops what the script started, loopback ports, waiting for a URL,
# `npm ci` once per lockfile, and a throwaway mcpgw node. Source it first
# thing after `set -euo pipefail`:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets SCRIPT_DIR (scripts/), REPO (the repo root) and CACHE (default
# <repo>/.cache, exported so the scripts this one runs share it). log and die
# prefix their line with LOG_NAME (default: the script's name without .sh).

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${CACHE:-$REPO/.cache}"
export CACHE
LOG_NAME="${LOG_NAME:-$(basename "$0" .sh)}"
# Set by require_node22 or by the script itself, never taken from the
# environment (free_port and npm_ci_once use it when set).
NODE=""

log() { echo "$LOG_NAME: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# need CMD...: die unless every CMD is on PATH.
need() {
	local cmd
	for cmd in "$@"; do
		command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found"
	done
}

# make_tmp NAME [KEEP_DIR]: create TMP (mcpgw-NAME.XXXXXX under $TMPDIR) and
# trap the script's exit: stop every process in PIDS, copy TMP into KEEP_DIR
# if one is given (raw results, logs), remove TMP, and exit with the status
# the script had. INT and TERM exit through the same path.
make_tmp() {
	TMP="$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-$1.XXXXXX")"
	_LIB_KEEP="${2:-}"
	PIDS=()
	trap _lib_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
_lib_cleanup() {
	local rc=$? pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [[ -n "$_LIB_KEEP" && -d "$TMP" ]]; then
		mkdir -p "$_LIB_KEEP"
		cp -r "$TMP"/. "$_LIB_KEEP"/ 2>/dev/null || true
	fi
	rm -rf "$TMP"
	exit "$rc"
}

# stop_pid PID: stop a process started in the background and reap it.
stop_pid() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# require_node22: set NODE (a node >= 22, from scripts/node22.sh) and NODE_DIR.
require_node22() {
	NODE="$("$SCRIPT_DIR/node22.sh" | tail -n1)"
	[[ -x "$NODE" ]] || die "no node >= 22 (got '$NODE')"
	NODE_DIR="$(dirname "$NODE")"
}

# free_port: print a loopback TCP port that was free a moment ago (with
# $NODE when the script has one, else python3).
free_port() {
	if [[ -n "${NODE:-}" ]]; then
		"$NODE" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
	else
		python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
	fi
}

# wait_http NAME PID URL: poll URL until it answers with any HTTP status;
# fail if PID exits first or WAIT_HTTP_SECS (default 30) pass.
wait_http() {
	local name="$1" pid="$2" url="$3" secs="${WAIT_HTTP_SECS:-30}"
	local deadline=$((SECONDS + secs))
	until curl -s -o /dev/null --max-time 1 "$url"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited before answering at $url"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "$name did not answer at $url within ${secs}s"
			return 1
		fi
		sleep 0.1
	done
}

# npm_ci_once SRC DEST PROBE: install SRC's package.json, package-lock.json
# and .npmrc into DEST with `npm ci`, so every machine gets the same
# dependency tree, outside the source tree. Skipped while the lockfile's
# checksum matches the last install and DEST/PROBE exists. Runs npm with
# $NODE's directory first on PATH when the script has picked a NODE.
npm_ci_once() {
	local src="$1" dest="$2" probe="$3"
	local stamp="$dest/.installed-lock.sha256" want have path="$PATH"
	want="$(sha256sum "$src/package-lock.json" | cut -d' ' -f1)"
	have="$(cat "$stamp" 2>/dev/null || true)"
	if [[ "$want" == "$have" && -e "$dest/$probe" ]]; then
		return 0
	fi
	need npm
	[[ -n "${NODE:-}" ]] && path="$(dirname "$NODE"):$PATH"
	log "installing ${src#"$REPO"/}/package-lock.json into $dest"
	mkdir -p "$dest"
	cp "$src/package.json" "$src/package-lock.json" "$src/.npmrc" "$dest/"
	(cd "$dest" && PATH="$path" npm ci --no-audit --no-fund --loglevel=error) >&2
	echo "$want" >"$stamp"
}

# package_version PACKAGE_JSON: print the version field, read with $NODE.
package_version() {
	"${NODE:-node}" -p 'require(process.argv[1]).version' "$1"
}

# start_echoserver: build examples/echoserver into TMP and start it on a
# free loopback port (log: TMP/echoserver.log); sets ECHO_URL, its MCP
# endpoint, once it answers.
start_echoserver() {
	local port
	(cd "$REPO" && go build -o "$TMP/echoserver" ./examples/echoserver)
	port="$(free_port)"
	"$TMP/echoserver" -addr "127.0.0.1:$port" >"$TMP/echoserver.log" 2>&1 &
	PIDS+=("$!")
	ECHO_URL="http://127.0.0.1:$port/mcp"
	wait_http echoserver "${PIDS[-1]}" "$ECHO_URL"
}

# start_mcpgw DIR: start a fresh single-node mcpgw ($MCPGW_BIN serve) with
# its state, vault key and log (mcpgw.log) in DIR, and wait until its HTTP
# and admin listeners answer. Every listener is on a free loopback port (or
# off: QUIC and the Unix socket, which no script speaks), so the node never
# collides with another one on the machine. Sets MCPGW_PID (also added to
# PIDS), GW_URL (the session listener) and ADMIN_URL. On failure prints the
# log's tail and returns 1.
start_mcpgw() {
	local dir="$1" port ports=()
	while ((${#ports[@]} < 3)); do
		port="$(free_port)" || return 1
		[[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
	done
	GW_URL="http://127.0.0.1:${ports[0]}"
	ADMIN_URL="http://127.0.0.1:${ports[1]}"
	mkdir -p "$dir/data"
	log "starting mcpgw: http 127.0.0.1:${ports[0]}, admin 127.0.0.1:${ports[1]}, raft 127.0.0.1:${ports[2]}"
	"$MCPGW_BIN" serve --data-dir "$dir/data" --vault-key "$dir/vault.key" \
		--http "127.0.0.1:${ports[0]}" --admin "127.0.0.1:${ports[1]}" --raft "127.0.0.1:${ports[2]}" \
		--quic "" --unix "" >"$dir/mcpgw.log" 2>&1 &
	MCPGW_PID=$!
	PIDS+=("$MCPGW_PID")
	if ! wait_http mcpgw-admin "$MCPGW_PID" "$ADMIN_URL/healthz" ||
		! wait_http mcpgw-http "$MCPGW_PID" "$GW_URL/"; then
		tail -n 30 "$dir/mcpgw.log" >&2 || true
		return 1
	fi
}

# mcpgw_route_add DIR NAME UPSTREAM_URL: add a named route on the node
# start_mcpgw DIR started.
mcpgw_route_add() {
	local dir="$1" name="$2" upstream="$3"
	log "adding route $name -> $upstream"
	if ! "$MCPGW_BIN" route add --admin "$ADMIN_URL" --data-dir "$dir/data" "$name" "$upstream" >&2; then
		log "route add failed; mcpgw log:"
		tail -n 30 "$dir/mcpgw.log" >&2 || true
		return 1
	fi
}

# mcpgw_token DIR NAME TTL: print a service token for service NAME in org
# NAME from the node start_mcpgw DIR started.
mcpgw_token() {
	local dir="$1" name="$2" ttl="$3"
	"$MCPGW_BIN" token issue --admin "$ADMIN_URL" --data-dir "$dir/data" \
		--service "$name" --org "$name" --ttl "$ttl" || {
		log "token issue failed"
		return 1
	}
}

#!/usr/bin/env bash
# Run the official MCP server conformance suite (@modelcontextprotocol/conformance,
# pinned with its dependencies by scripts/conformance-suite/package-lock.json)
# against two MCP server implementations: the go-sdk's own conformance server
# ("everything-server", server "go") and this project's TypeScript SDK server
# (scripts/ts-reference-server, server "ts"). Each is tested first directly,
# then (if MCPGW_BIN is set) through a fresh mcpgw gateway in front of it, and
# the two are compared; this is repeated CONFORMANCE_PASSES times per server,
# because a gateway that passes only sometimes is broken.
#
# Usage:
#   scripts/conformance.sh                      # direct only
#   MCPGW_BIN=./mcpgw scripts/conformance.sh    # direct + through the gateway
#
# Env:
#   MCPGW_BIN                path of the mcpgw binary; enables the gateway run
#   CONFORMANCE_SERVERS      servers to test, space-separated (default: "go ts")
#   CONFORMANCE_PASSES       passes per server, direct and gateway each (default: 1)
#   CONFORMANCE_KNOWN_DIFFERENCES
#                            file of scenarios allowed to fail through the gateway
#                            while they pass directly (default:
#                            scripts/conformance-known-differences.txt)
#   CACHE                    cache dir (default: <repo>/.cache)
#   CONFORMANCE_SUITE        "all" (default), "active" or "pending"
#   CONFORMANCE_SCENARIO     run a single scenario instead of a suite
#   CONFORMANCE_SPEC_VERSION filter scenarios by spec version (e.g. 2025-11-25)
#   CONFORMANCE_TIMEOUT      wall-clock limit for one suite run (default: 420s: a
#                            lost server-to-client request costs the suite's 60 s
#                            request timeout per scenario)
#   CONFORMANCE_RESULTS_DIR  if set, copy the raw results (checks.json, logs) here
#
# For every server and pass it prints:
#   conformance [SERVER pass P/N]: direct N passed, M failed; gateway N passed, M failed
# and repeats those lines in a summary at the end. Exit status is non-zero if,
# in any pass, the direct run fails anything not expected (go: go-sdk's
# conformance/baseline.yml; ts: scripts/ts-reference-server/baseline.yml), or
# any check passing directly does not pass through the gateway, unless its
# scenario is listed for that server in the known-differences file (checks of
# the dns-rebinding-protection scenario are exempt from the comparison but
# must pass through the gateway on their own).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${CACHE:-$REPO/.cache}"

CONFORMANCE_SUITE="${CONFORMANCE_SUITE:-all}"
CONFORMANCE_SCENARIO="${CONFORMANCE_SCENARIO:-}"
CONFORMANCE_SPEC_VERSION="${CONFORMANCE_SPEC_VERSION:-}"
CONFORMANCE_TIMEOUT="${CONFORMANCE_TIMEOUT:-420s}"
CONFORMANCE_SERVERS="${CONFORMANCE_SERVERS:-go ts}"
CONFORMANCE_PASSES="${CONFORMANCE_PASSES:-1}"
KNOWN_DIFFERENCES="${CONFORMANCE_KNOWN_DIFFERENCES:-$SCRIPT_DIR/conformance-known-differences.txt}"
CONFORMANCE_RESULTS_DIR="${CONFORMANCE_RESULTS_DIR:-}"
# Scenarios about the answering server's own Host/Origin (DNS rebinding) checks.
EXEMPT_SCENARIOS="dns-rebinding-protection"

# ---- gateway command line (adjust here when mcpgw's CLI changes) ------------
MCPGW_BIN="${MCPGW_BIN:-}"
GW_ROUTE_NAME="conformance"
GW_SERVE_CMD=(serve)
GW_FLAG_DATA_DIR="--data-dir"
GW_FLAG_HTTP="--http"
GW_FLAG_ADMIN="--admin"
# Extra serve flags for an unauthenticated local trial gateway.
GW_SERVE_EXTRA=()
GW_ROUTE_ADD_CMD=(route add)
GW_FLAG_ROUTE_ADMIN="--admin"
# Downstream streamable-HTTP path of a named route on the gateway.
GW_ROUTE_PATH_PREFIX="/v1/mcp/"
# Query naming the org and account the conformance client acts for.
GW_ROUTE_QUERY="?org=conformance&account=conformance"
# Path the upstream servers serve MCP on (the everything-server answers on any path).
UPSTREAM_PATH="/mcp"
# -----------------------------------------------------------------------------

POLL_INTERVAL=0.1
READY_DEADLINE_SECS=30

log() { echo "conformance: $*" >&2; }
die() {
	log "$*"
	exit 1
}

TMP="$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-conformance.XXXXXX")"
PIDS=()
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n "$CONFORMANCE_RESULTS_DIR" && -d "$TMP" ]]; then
		mkdir -p "$CONFORMANCE_RESULTS_DIR"
		cp -r "$TMP"/. "$CONFORMANCE_RESULTS_DIR"/ 2>/dev/null || true
	fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- toolchain ----------------------------------------------------------------

# shellcheck source=scripts/conformance-lib.sh
. "$SCRIPT_DIR/conformance-lib.sh"
conformance_node

EVERYTHING_SERVER="$CACHE/bin/everything-server"
build_everything_server() { build_go_sdk_conformance everything-server "$EVERYTHING_SERVER"; }

# ---- helpers ------------------------------------------------------------------

free_port() {
	"$NODE" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_http NAME PID URL: poll until URL answers with any HTTP status.
wait_http() {
	local name="$1" pid="$2" url="$3"
	local deadline=$((SECONDS + READY_DEADLINE_SECS))
	while ((SECONDS < deadline)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited before answering"
			return 1
		fi
		if curl -s -o /dev/null --max-time 1 "$url"; then
			return 0
		fi
		sleep "$POLL_INTERVAL"
	done
	log "$name did not answer at $url within ${READY_DEADLINE_SECS}s"
	return 1
}

# run_suite URL OUTDIR LOG: run the conformance suite against URL.
run_suite() {
	local url="$1" outdir="$2" logfile="$3"
	local args=(server --url "$url" -o "$outdir")
	if [[ -n "$CONFORMANCE_SCENARIO" ]]; then
		args+=(--scenario "$CONFORMANCE_SCENARIO")
	else
		args+=(--suite "$CONFORMANCE_SUITE")
	fi
	if [[ -n "$CONFORMANCE_SPEC_VERSION" ]]; then
		args+=(--spec-version "$CONFORMANCE_SPEC_VERSION")
	fi
	mkdir -p "$outdir"
	# Never log the gateway token (it rides in the URL's access_token).
	log "running: node $(basename "$CLI") $(sed -E 's/(access_token=)[^& ]+/\1***/g' <<<"${args[*]}")"
	local rc=0
	# Run from the temp dir so the CLI writes nothing into the repo.
	(cd "$TMP" && CI=true NO_COLOR=1 timeout "$CONFORMANCE_TIMEOUT" "$NODE" "$CLI" "${args[@]}") \
		>"$logfile" 2>&1 || rc=$?
	if ((rc == 124)); then
		log "suite against $url hit the ${CONFORMANCE_TIMEOUT} limit; partial results kept"
	fi
	sed -n '/=== SUMMARY ===/,$p' "$logfile" >&2
	return 0
}

# ---- gateway ------------------------------------------------------------------

# run_through_gateway UPSTREAM_URL OUTDIR LOG GWDIR
# Starts a fresh mcpgw (state in GWDIR) in front of UPSTREAM_URL, registers it
# as route $GW_ROUTE_NAME, runs the suite against the gateway's route URL, and
# stops the gateway again.
run_through_gateway() {
	local upstream="$1" outdir="$2" logfile="$3" gwdir="$4"
	local gwport adminport
	gwport="$(free_port)"
	adminport="$(free_port)"
	while [[ "$adminport" == "$gwport" ]]; do adminport="$(free_port)"; done
	local admin_url="http://127.0.0.1:$adminport"
	local gw_url="http://127.0.0.1:$gwport${GW_ROUTE_PATH_PREFIX}$GW_ROUTE_NAME$GW_ROUTE_QUERY"

	# (a) start the gateway.
	mkdir -p "$gwdir/data"
	log "starting mcpgw: http 127.0.0.1:$gwport, admin 127.0.0.1:$adminport"
	"$MCPGW_BIN" "${GW_SERVE_CMD[@]}" \
		"$GW_FLAG_DATA_DIR" "$gwdir/data" \
		--vault-key "$gwdir/vault.key" \
		"$GW_FLAG_HTTP" "127.0.0.1:$gwport" \
		"$GW_FLAG_ADMIN" "127.0.0.1:$adminport" \
		"${GW_SERVE_EXTRA[@]}" \
		>"$gwdir/mcpgw.log" 2>&1 &
	local gwpid=$!
	PIDS+=("$gwpid")
	if ! wait_http mcpgw-admin "$gwpid" "$admin_url/" ||
		! wait_http mcpgw-http "$gwpid" "http://127.0.0.1:$gwport/"; then
		tail -n 30 "$gwdir/mcpgw.log" >&2 || true
		return 1
	fi

	# (b) register the upstream as a named route.
	log "adding route $GW_ROUTE_NAME -> $upstream"
	if ! "$MCPGW_BIN" "${GW_ROUTE_ADD_CMD[@]}" "$GW_FLAG_ROUTE_ADMIN" "$admin_url" "$GW_FLAG_DATA_DIR" "$gwdir/data" \
		"$GW_ROUTE_NAME" "$upstream" >"$gwdir/route-add.log" 2>&1; then
		log "route add failed:"
		cat "$gwdir/route-add.log" >&2
		tail -n 30 "$gwdir/mcpgw.log" >&2 || true
		return 1
	fi

	# (c) issue a service token; the suite's client cannot set headers, so it
	# rides in the access_token query parameter.
	local token
	if ! token="$("$MCPGW_BIN" token issue --admin "$admin_url" "$GW_FLAG_DATA_DIR" "$gwdir/data" \
		--service conformance --org conformance --ttl 1h 2>"$gwdir/token.log")"; then
		log "token issue failed:"
		cat "$gwdir/token.log" >&2
		return 1
	fi

	# (d) run the suite through the gateway.
	run_suite "$gw_url&access_token=$token" "$outdir" "$logfile"
	kill "$gwpid" 2>/dev/null || true
	wait "$gwpid" 2>/dev/null || true
}

# ---- upstream servers ---------------------------------------------------------

# start_upstream SERVER: start the named upstream server on a free loopback
# port; sets UPSTREAM_URL, UPSTREAM_PID and BASELINE (expected direct failures).
start_upstream() {
	local server="$1" port
	port="$(free_port)"
	UPSTREAM_URL="http://127.0.0.1:$port$UPSTREAM_PATH"
	BASELINE=""
	local logfile="$TMP/$server/server.log"
	mkdir -p "$TMP/$server"
	case "$server" in
	go)
		build_everything_server
		BASELINE="$GO_SDK_DIR/conformance/baseline.yml"
		# -stateless=false: server-initiated sampling/elicitation need the
		# stateful transport (as go-sdk's own scripts/server-conformance.sh runs it).
		log "starting go-sdk everything-server on 127.0.0.1:$port"
		"$EVERYTHING_SERVER" -http="127.0.0.1:$port" -stateless=false >"$logfile" 2>&1 &
		;;
	ts)
		BASELINE="$SCRIPT_DIR/ts-reference-server/baseline.yml"
		"$SCRIPT_DIR/ts-reference-server.sh" --install-only
		log "starting TypeScript SDK reference server on 127.0.0.1:$port"
		CACHE="$CACHE" "$SCRIPT_DIR/ts-reference-server.sh" --port "$port" >"$logfile" 2>&1 &
		;;
	*) die "unknown server '$server' in CONFORMANCE_SERVERS: use go and/or ts" ;;
	esac
	UPSTREAM_PID=$!
	PIDS+=("$UPSTREAM_PID")
	if ! wait_http "$server-server" "$UPSTREAM_PID" "$UPSTREAM_URL"; then
		cat "$logfile" >&2
		exit 1
	fi
}

stop_upstream() {
	kill "$UPSTREAM_PID" 2>/dev/null || true
	wait "$UPSTREAM_PID" 2>/dev/null || true
}

# ---- main ---------------------------------------------------------------------

command -v go >/dev/null 2>&1 || die "go not found"
command -v curl >/dev/null 2>&1 || die "curl not found"
[[ "$CONFORMANCE_PASSES" =~ ^[1-9][0-9]*$ ]] || die "CONFORMANCE_PASSES must be a positive integer, got '$CONFORMANCE_PASSES'"
if [[ -n "$MCPGW_BIN" && ! -x "$MCPGW_BIN" ]]; then
	die "MCPGW_BIN=$MCPGW_BIN is not an executable"
fi
install_conformance
CLI="$(conformance_cli)"
[[ -f "$CLI" ]] || die "conformance CLI not found at $CLI"

rc=0
SUMMARY=()
KNOWN_SEEN=()
for server in $CONFORMANCE_SERVERS; do
	start_upstream "$server"
	for ((pass = 1; pass <= CONFORMANCE_PASSES; pass++)); do
		label="$server pass $pass/$CONFORMANCE_PASSES"
		dir="$TMP/$server/pass$pass"
		log "[$label] direct"
		run_suite "$UPSTREAM_URL" "$dir/direct" "$dir/direct.log"
		report_args=(--label "$label" --server "$server" --direct "$dir/direct" --exempt "$EXEMPT_SCENARIOS")
		[[ -n "$BASELINE" && -f "$BASELINE" ]] && report_args+=(--baseline "$BASELINE")
		[[ -f "$KNOWN_DIFFERENCES" ]] && report_args+=(--known-differences "$KNOWN_DIFFERENCES")
		gateway_ok=1
		if [[ -n "$MCPGW_BIN" ]]; then
			log "[$label] through the gateway"
			if ! run_through_gateway "$UPSTREAM_URL" "$dir/gateway" "$dir/gateway.log" "$dir/gw"; then
				log "[$label] gateway run could not start; counting every gateway check as missing"
				gateway_ok=0
			fi
			report_args+=(--gateway "$dir/gateway")
		fi
		prc=0
		"$NODE" "$SCRIPT_DIR/conformance-report.mjs" "${report_args[@]}" >"$dir/report.txt" || prc=$?
		cat "$dir/report.txt"
		if ((gateway_ok == 0 && prc == 0)); then
			prc=1
		fi
		line="$(tail -n1 "$dir/report.txt")"
		if ((prc != 0)); then
			rc=1
			line+=" [FAILED]"
		fi
		SUMMARY+=("$line")
		while IFS= read -r line; do
			KNOWN_SEEN+=("$label: $line")
		done < <(sed -n 's/^  known difference: //p' "$dir/report.txt")
	done
	stop_upstream
done

echo "=== conformance matrix (suite $CONFORMANCE_SUITE; servers: $CONFORMANCE_SERVERS; $CONFORMANCE_PASSES pass(es) each) ==="
for line in "${SUMMARY[@]}"; do echo "$line"; done
if ((${#KNOWN_SEEN[@]} > 0)); then
	echo "known gateway differences seen (listed in $(basename "$KNOWN_DIFFERENCES"), not counted as failures):"
	for line in "${KNOWN_SEEN[@]}"; do echo "  $line"; done
fi
if ((rc != 0)); then
	echo "conformance: FAILED (see the problems above)"
fi
exit "$rc"

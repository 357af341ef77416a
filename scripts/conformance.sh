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

# shellcheck source=scripts/conformance-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/conformance-lib.sh"

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

# ---- gateway (the node itself is started by start_mcpgw in scripts/lib.sh) --
MCPGW_BIN="${MCPGW_BIN:-}"
GW_ROUTE_NAME="conformance"
# Downstream streamable-HTTP path of a named route on the gateway.
GW_ROUTE_PATH_PREFIX="/v1/mcp/"
# Query naming the org and account the conformance client acts for.
GW_ROUTE_QUERY="?org=conformance&account=conformance"
# Path the upstream servers serve MCP on (the everything-server answers on any path).
UPSTREAM_PATH="/mcp"
# -----------------------------------------------------------------------------

make_tmp conformance "$CONFORMANCE_RESULTS_DIR"

# ---- toolchain ----------------------------------------------------------------

require_node22

EVERYTHING_SERVER="$CACHE/bin/everything-server"
build_everything_server() { build_go_sdk_conformance everything-server "$EVERYTHING_SERVER"; }

# ---- helpers ------------------------------------------------------------------

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
	start_mcpgw "$gwdir" || return 1
	mcpgw_route_add "$gwdir" "$GW_ROUTE_NAME" "$upstream" || return 1
	# The suite's client cannot set headers, so the service token rides in
	# the access_token query parameter.
	local token
	token="$(mcpgw_token "$gwdir" conformance 1h)" || return 1
	run_suite "$GW_URL$GW_ROUTE_PATH_PREFIX$GW_ROUTE_NAME$GW_ROUTE_QUERY&access_token=$token" "$outdir" "$logfile"
	stop_pid "$MCPGW_PID"
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

# ---- main ---------------------------------------------------------------------

need go curl
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
	stop_pid "$UPSTREAM_PID"
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

#!/usr/bin/env bash
# Run the official MCP conformance suite's client auth scenarios
# (@modelcontextprotocol/conformance, pinned by
# scripts/conformance-suite/package-lock.json) twice: with the go-sdk's own
# conformance/everything-client (the baseline: what the SDK client passes),
# and with the gateway as the OAuth client (scripts/conformance-client: a
# fresh mcpgw per scenario, the scenario's server added as a route, `mcpgw
# oauth url` opened as a browser would, the gateway's callback completing
# the flow, then tools/list and tools/call test-tool through the gateway).
#
# Usage:
#   scripts/conformance-client.sh                    # builds mcpgw into .cache/bin
#   MCPGW_BIN=./mcpgw scripts/conformance-client.sh
#
# Env:
#   MCPGW_BIN                       mcpgw binary (default: built into $CACHE/bin)
#   CACHE                           cache dir (default: <repo>/.cache)
#   CONFORMANCE_CLIENT_SCENARIOS    scenarios to run, space-separated (default:
#                                   every auth/ client scenario the suite lists)
#   CONFORMANCE_CLIENT_EXPECTED     scenarios the gateway is not expected to
#                                   pass, with reasons (default:
#                                   scripts/conformance-client-expected.txt)
#   CONFORMANCE_TIMEOUT_MS          the suite's per-scenario timeout (default 90000: generous
#                                   for loaded machines; a passing scenario takes seconds)
#   CONFORMANCE_CLIENT_JOBS         scenarios run at once (default 4)
#   CONFORMANCE_RESULTS_DIR         if set, copy the raw results here
#
# It prints one line per scenario (go-sdk client, gateway), both pass lists,
# and exits non-zero if a scenario the go-sdk client passes fails through the
# gateway without being listed in the expected file.
set -euo pipefail

# shellcheck source=scripts/conformance-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/conformance-lib.sh"
MCPGW_BIN="${MCPGW_BIN:-}"
SCENARIOS="${CONFORMANCE_CLIENT_SCENARIOS:-}"
EXPECTED="${CONFORMANCE_CLIENT_EXPECTED:-$SCRIPT_DIR/conformance-client-expected.txt}"
TIMEOUT_MS="${CONFORMANCE_TIMEOUT_MS:-90000}"
JOBS="${CONFORMANCE_CLIENT_JOBS:-4}"
CONFORMANCE_RESULTS_DIR="${CONFORMANCE_RESULTS_DIR:-}"

make_tmp conformance-client "$CONFORMANCE_RESULTS_DIR"
need go

require_node22
install_conformance
CLI="$(conformance_cli)"
[[ -f "$CLI" ]] || die "conformance CLI not found at $CLI"

mkdir -p "$CACHE/bin"
if [[ -z "$MCPGW_BIN" ]]; then
	log "building mcpgw"
	(cd "$REPO" && go build -o "$CACHE/bin/mcpgw" .) || die "could not build mcpgw"
	MCPGW_BIN="$CACHE/bin/mcpgw"
fi
[[ -x "$MCPGW_BIN" ]] || die "MCPGW_BIN=$MCPGW_BIN is not an executable"
MCPGW_BIN="$(cd "$(dirname "$MCPGW_BIN")" && pwd)/$(basename "$MCPGW_BIN")"
HARNESS="$CACHE/bin/mcpgw-conformance-client"
log "building the gateway's conformance client (scripts/conformance-client)"
(cd "$REPO" && go build -o "$HARNESS" ./scripts/conformance-client) || die "could not build scripts/conformance-client"
SDK_CLIENT="$CACHE/bin/everything-client"
build_go_sdk_conformance everything-client "$SDK_CLIENT"

if [[ -z "$SCENARIOS" ]]; then
	SCENARIOS="$(cd "$TMP" && "$NODE" "$CLI" list 2>/dev/null |
		sed -n '/^Client scenarios/,$p' | grep -oE '^ *- auth/[^ ]+' | sed 's/^ *- //' | tr '\n' ' ')"
fi
[[ -n "$SCENARIOS" ]] || die "the suite lists no auth/ client scenarios"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "CONFORMANCE_CLIENT_JOBS must be a positive integer, got '$JOBS'"
version="$(package_version "$CONF_PKG/package.json")"
log "suite @modelcontextprotocol/conformance $version; scenarios: $SCENARIOS"

# run_client NAME COMMAND SCENARIO: one scenario with one client; results in $TMP/NAME.
run_client() {
	local name="$1" cmd="$2" scenario="$3"
	local logfile
	logfile="$TMP/$name-${scenario//\//_}.log"
	# Run from the temp dir so the CLI writes nothing into the repo. The
	# client's own exit status is not the verdict: the checks are.
	(cd "$TMP" && CI=true NO_COLOR=1 MCPGW_BIN="$MCPGW_BIN" "$NODE" "$CLI" client \
		--command "$cmd" --scenario "$scenario" --timeout "$TIMEOUT_MS" -o "$TMP/$name") >"$logfile" 2>&1 || true
}

# run_scenario SCENARIO: both clients, side by side (each gets a scenario
# server of its own).
run_scenario() {
	local scenario="$1"
	run_client sdk "$SDK_CLIENT" "$scenario" &
	local sdk_pid=$!
	run_client gateway "$HARNESS" "$scenario"
	wait "$sdk_pid"
	log "$scenario done ($((SECONDS - start))s)"
}

# A scenario spends its time waiting (processes starting, a raft election,
# HTTP round trips), not computing: a few at once cut the wall time.
start=$SECONDS
for scenario in $SCENARIOS; do
	run_scenario "$scenario" &
	while (($(jobs -rp | wc -l) >= JOBS)); do
		wait -n || true
	done
done
wait

echo "=== MCP conformance, client auth scenarios (suite $version): go-sdk everything-client and the gateway as the OAuth client ==="
rc=0
"$NODE" "$SCRIPT_DIR/conformance-client-report.mjs" --scenarios "$SCENARIOS" \
	--sdk "$TMP/sdk" --gateway "$TMP/gateway" --expected "$EXPECTED" || rc=$?
if ((rc != 0)); then
	echo "conformance-client: FAILED (see the problems above; logs: set CONFORMANCE_RESULTS_DIR to keep them)"
fi
exit "$rc"

#!/usr/bin/env bash
# Run the official MCP server conformance suite (@modelcontextprotocol/conformance)
# against the go-sdk's own conformance server ("everything-server"), first
# directly, then (if MCPGW_BIN is set) through an mcpgw gateway in front of it,
# and compare the two.
#
# Usage:
#   scripts/conformance.sh                      # direct only
#   MCPGW_BIN=./mcpgw scripts/conformance.sh    # direct + through the gateway
#
# Env:
#   MCPGW_BIN                path of the mcpgw binary; enables the gateway run
#   CACHE                    cache dir (default: <repo>/.cache)
#   CONFORMANCE_VERSION      npm version of @modelcontextprotocol/conformance
#   CONFORMANCE_SUITE        "all" (default), "active" or "pending"
#   CONFORMANCE_SCENARIO     run a single scenario instead of a suite
#   CONFORMANCE_SPEC_VERSION filter scenarios by spec version (e.g. 2025-11-25)
#   CONFORMANCE_TIMEOUT      wall-clock limit for one suite run (default: 180s)
#   CONFORMANCE_RESULTS_DIR  if set, copy the raw results (checks.json, logs) here
#
# The last line printed is:
#   conformance: direct N passed, M failed; gateway N passed, M failed
# Exit status is non-zero if the direct run fails anything not in go-sdk's
# conformance/baseline.yml, or if any check passing directly does not pass
# through the gateway (checks of the dns-rebinding-protection scenario are
# exempt from that comparison but must pass through the gateway on their own).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${CACHE:-$REPO/.cache}"

CONFORMANCE_VERSION="${CONFORMANCE_VERSION:-0.1.16}"
CONFORMANCE_SUITE="${CONFORMANCE_SUITE:-all}"
CONFORMANCE_SCENARIO="${CONFORMANCE_SCENARIO:-}"
CONFORMANCE_SPEC_VERSION="${CONFORMANCE_SPEC_VERSION:-}"
CONFORMANCE_TIMEOUT="${CONFORMANCE_TIMEOUT:-180s}"
CONFORMANCE_RESULTS_DIR="${CONFORMANCE_RESULTS_DIR:-}"
GO_SDK_MODULE="github.com/modelcontextprotocol/go-sdk"
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
# Path the everything-server is registered under (it serves MCP on any path).
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

NODE="$("$SCRIPT_DIR/node22.sh" | tail -n1)"
[[ -x "$NODE" ]] || die "no node >= 22 (got '$NODE')"
NODE_DIR="$(dirname "$NODE")"

CONF_DIR="$CACHE/conformance"
CONF_PKG="$CONF_DIR/node_modules/@modelcontextprotocol/conformance"

install_conformance() {
	local have=""
	if [[ -f "$CONF_PKG/package.json" ]]; then
		have="$("$NODE" -p 'require(process.argv[1]).version' "$CONF_PKG/package.json" 2>/dev/null || true)"
	fi
	if [[ "$have" == "$CONFORMANCE_VERSION" ]]; then
		return 0
	fi
	log "installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION into $CONF_DIR"
	mkdir -p "$CONF_DIR"
	PATH="$NODE_DIR:$PATH" npm install --prefix "$CONF_DIR" --no-audit --no-fund \
		--loglevel=error "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2
}

conformance_cli() {
	local bin
	bin="$("$NODE" -p 'const p=require(process.argv[1]); typeof p.bin==="string"?p.bin:(p.bin.conformance||Object.values(p.bin)[0])' \
		"$CONF_PKG/package.json")"
	echo "$CONF_PKG/$bin"
}

# Build go-sdk's conformance/everything-server at the version our go.mod requires.
# First from the repo root (uses our go.mod/go.sum, never modifies them); if our
# go.sum lacks entries for its dependencies, from a writable temp copy of the
# module (its own go.mod/go.sum, dependencies from the module proxy).
EVERYTHING_SERVER="$CACHE/bin/everything-server"
GO_SDK_DIR=""
build_everything_server() {
	local version
	version="$(cd "$REPO" && go list -mod=readonly -m -f '{{.Version}}' "$GO_SDK_MODULE")" ||
		die "go.mod does not require $GO_SDK_MODULE"
	GO_SDK_DIR="$(cd "$REPO" && go list -mod=readonly -m -f '{{.Dir}}' "$GO_SDK_MODULE")"
	if [[ -z "$GO_SDK_DIR" || ! -d "$GO_SDK_DIR" ]]; then
		# Download outside the repo so our go.sum is never touched.
		GO_SDK_DIR="$(cd "$TMP" && GOWORK=off go mod download -json "$GO_SDK_MODULE@$version" |
			"$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).Dir||""))')"
	fi
	[[ -d "$GO_SDK_DIR/conformance/everything-server" ]] ||
		die "$GO_SDK_MODULE@$version has no conformance/everything-server"
	mkdir -p "$CACHE/bin"
	log "building everything-server from $GO_SDK_MODULE@$version"
	if (cd "$REPO" && go build -mod=readonly -o "$EVERYTHING_SERVER" \
		"$GO_SDK_MODULE/conformance/everything-server") 2>"$TMP/build-root.log"; then
		return 0
	fi
	log "build from the repo root failed (see below); building from a copy of the module"
	sed 's/^/  /' "$TMP/build-root.log" | head -n 20 >&2
	cp -r "$GO_SDK_DIR" "$TMP/go-sdk"
	chmod -R u+w "$TMP/go-sdk"
	(cd "$TMP/go-sdk" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off \
		go build -o "$EVERYTHING_SERVER" ./conformance/everything-server) >&2 ||
		die "could not build everything-server"
	rm -rf "$TMP/go-sdk"
}

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
	log "running: node $(basename "$CLI") ${args[*]}"
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

# run_through_gateway UPSTREAM_URL OUTDIR LOG
# Starts mcpgw in front of UPSTREAM_URL, registers it as route $GW_ROUTE_NAME,
# and runs the suite against the gateway's route URL.
run_through_gateway() {
	local upstream="$1" outdir="$2" logfile="$3"
	local gwport adminport
	gwport="$(free_port)"
	adminport="$(free_port)"
	while [[ "$adminport" == "$gwport" ]]; do adminport="$(free_port)"; done
	local admin_url="http://127.0.0.1:$adminport"
	local gw_url="http://127.0.0.1:$gwport${GW_ROUTE_PATH_PREFIX}$GW_ROUTE_NAME$GW_ROUTE_QUERY"

	# (a) start the gateway.
	mkdir -p "$TMP/gw/data"
	log "starting mcpgw: http 127.0.0.1:$gwport, admin 127.0.0.1:$adminport"
	"$MCPGW_BIN" "${GW_SERVE_CMD[@]}" \
		"$GW_FLAG_DATA_DIR" "$TMP/gw/data" \
		--vault-key "$TMP/gw/vault.key" \
		"$GW_FLAG_HTTP" "127.0.0.1:$gwport" \
		"$GW_FLAG_ADMIN" "127.0.0.1:$adminport" \
		"${GW_SERVE_EXTRA[@]}" \
		>"$TMP/gw/mcpgw.log" 2>&1 &
	local gwpid=$!
	PIDS+=("$gwpid")
	if ! wait_http mcpgw-admin "$gwpid" "$admin_url/" ||
		! wait_http mcpgw-http "$gwpid" "http://127.0.0.1:$gwport/"; then
		tail -n 30 "$TMP/gw/mcpgw.log" >&2 || true
		return 1
	fi

	# (b) register the upstream as a named route.
	log "adding route $GW_ROUTE_NAME -> $upstream"
	if ! "$MCPGW_BIN" "${GW_ROUTE_ADD_CMD[@]}" "$GW_FLAG_ROUTE_ADMIN" "$admin_url" "$GW_FLAG_DATA_DIR" "$TMP/gw/data" \
		"$GW_ROUTE_NAME" "$upstream" >"$TMP/gw/route-add.log" 2>&1; then
		log "route add failed:"
		cat "$TMP/gw/route-add.log" >&2
		tail -n 30 "$TMP/gw/mcpgw.log" >&2 || true
		return 1
	fi

	# (c) issue a service token; the suite's client cannot set headers, so it
	# rides in the access_token query parameter.
	local token
	if ! token="$("$MCPGW_BIN" token issue --admin "$admin_url" "$GW_FLAG_DATA_DIR" "$TMP/gw/data" \
		--service conformance --org conformance --ttl 1h 2>"$TMP/gw/token.log")"; then
		log "token issue failed:"
		cat "$TMP/gw/token.log" >&2
		return 1
	fi

	# (d) run the suite through the gateway.
	run_suite "$gw_url&access_token=$token" "$outdir" "$logfile"
}

# ---- main ---------------------------------------------------------------------

command -v go >/dev/null 2>&1 || die "go not found"
command -v curl >/dev/null 2>&1 || die "curl not found"
install_conformance
CLI="$(conformance_cli)"
[[ -f "$CLI" ]] || die "conformance CLI not found at $CLI"
build_everything_server
BASELINE="$GO_SDK_DIR/conformance/baseline.yml"

port="$(free_port)"
upstream_url="http://127.0.0.1:$port$UPSTREAM_PATH"
# -stateless=false: server-initiated sampling/elicitation need the stateful
# transport (as go-sdk's own scripts/server-conformance.sh runs it).
log "starting everything-server on 127.0.0.1:$port"
"$EVERYTHING_SERVER" -http="127.0.0.1:$port" -stateless=false >"$TMP/everything-server.log" 2>&1 &
srvpid=$!
PIDS+=("$srvpid")
if ! wait_http everything-server "$srvpid" "$upstream_url"; then
	cat "$TMP/everything-server.log" >&2
	exit 1
fi

run_suite "$upstream_url" "$TMP/direct" "$TMP/direct.log"

report_args=(--direct "$TMP/direct" --exempt "$EXEMPT_SCENARIOS")
[[ -f "$BASELINE" ]] && report_args+=(--baseline "$BASELINE")
gateway_ok=1
if [[ -n "$MCPGW_BIN" ]]; then
	[[ -x "$MCPGW_BIN" ]] || die "MCPGW_BIN=$MCPGW_BIN is not an executable"
	if ! run_through_gateway "$upstream_url" "$TMP/gateway" "$TMP/gateway.log"; then
		log "gateway run could not start; counting every gateway check as missing"
		gateway_ok=0
	fi
	report_args+=(--gateway "$TMP/gateway")
fi

rc=0
"$NODE" "$SCRIPT_DIR/conformance-report.mjs" "${report_args[@]}" || rc=$?
if ((gateway_ok == 0 && rc == 0)); then
	rc=1
fi
exit "$rc"

#!/usr/bin/env bash
# Runs the README's shell examples, in order, the way a reader on a fresh
# machine would, so the README cannot drift from the binary.
#
# Every ```sh block in README.md carries a marker on the line before it:
#
#   <!-- readme-test: run -->              run it in the current directory
#   <!-- readme-test: run new-dir -->      stop what earlier blocks started in
#                                          the background, then run it in a new
#                                          empty directory
#   <!-- readme-test: run new-dir node --> the same, after starting the echo
#                                          server and a node as the quick start
#                                          does (for sections that assume one)
#   <!-- readme-test: skip REASON -->      not run (other machines, package
#                                          installs, the internet, placeholders)
#
# A ```sh block without a marker fails the test: say whether it runs.
#
# Commands run under `set -euo pipefail` with the built binary on PATH as
# mcpgw; `go run .` and `go run ./examples/echoserver` resolve to binaries
# built once. Background jobs are stopped at the end. No address beyond
# loopback is contacted: blocks that would are skipped.
#
# Fixtures a reader would bring: $UPSTREAM_TOKEN, headers.txt and
# files.env (created in each new directory).
#
# Usage: [MCPGW_BIN=/path/to/mcpgw] scripts/readme-test.sh [README.md]
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
README="${1:-$REPO/README.md}"
README="$(cd "$(dirname "$README")" && pwd)/$(basename "$README")"
TIMEOUT="${README_TEST_TIMEOUT:-300}"

make_tmp readme
BIN="$TMP/bin"
mkdir -p "$BIN"

if [[ -n "${MCPGW_BIN:-}" ]]; then
	cp "$MCPGW_BIN" "$BIN/mcpgw"
else
	log "building mcpgw"
	(cd "$REPO" && go build -o "$BIN/mcpgw" .)
fi
log "building examples/echoserver"
(cd "$REPO" && go build -o "$BIN/echoserver" ./examples/echoserver)

# `go run` lines of the README, from any directory, without recompiling.
cat >"$BIN/go" <<'EOF'
#!/usr/bin/env bash
here="$(dirname "${BASH_SOURCE[0]}")"
case "$1 $2" in
"run .") shift 2; exec "$here/mcpgw" "$@" ;;
"run ./examples/echoserver") shift 2; exec "$here/echoserver" "$@" ;;
esac
echo "readme-test: 'go $*' is not one the README test knows; mark the block skip or teach scripts/readme-test.sh" >&2
exit 1
EOF
chmod +x "$BIN/go"

# Extract the blocks into one script. Each block is preceded by a line that
# sets __off so that PS4 and the ERR trap name README lines, not script lines.
SCRIPT="$TMP/readme.sh"
awk -v readme="$README" '
function fail(msg) { printf "readme-test: %s:%d: %s\n", readme, NR, msg > "/dev/stderr"; bad = 1 }
/^[[:space:]]*<!-- readme-test: / {
	marker = $0
	sub(/^[[:space:]]*<!-- readme-test: /, "", marker); sub(/ -->[[:space:]]*$/, "", marker)
	markerline = NR
	next
}
!inblock && /^[[:space:]]*```/ {
	fence = $0; indent = fence; sub(/```.*/, "", indent)
	lang = fence; sub(/^[[:space:]]*```/, "", lang)
	inblock = 1; start = NR + 1; keep = 0
	if (lang == "sh") {
		if (markerline != NR - 1) { fail("```sh block without a <!-- readme-test: run|skip REASON --> marker on the line before it") }
		else if (marker ~ /^skip [^ ]/) { reason = substr(marker, 6); gsub(/\047/, "", reason); printf "{ __skip %d \047%s\047; } 2>/dev/null\n", start, reason }
		else if (marker ~ /^run( new-dir( node)?)?$/) {
			keep = 1
			mode = marker; sub(/^run ?/, "", mode)
			printf "{ __block %d \"%s\"; } 2>/dev/null\n", start, mode
			printf "{ __off=$(( %d - LINENO - 1 )); set -x; } 2>/dev/null\n", start
		} else { fail("unknown marker \"" marker "\": use run, run new-dir, run new-dir node or skip REASON") }
	}
	next
}
inblock && /^[[:space:]]*```[[:space:]]*$/ { inblock = 0; if (keep) print ":"; next }
inblock && keep {
	line = $0
	if (substr(line, 1, length(indent)) == indent) line = substr(line, length(indent) + 1)
	print line
}
END { if (inblock) fail("unterminated fence"); exit bad }
' "$README" >"$TMP/blocks.sh"

cat >"$SCRIPT" <<'EOF'
set -euo pipefail
shopt -s inherit_errexit
__off=0
PS4='+ README.md:$((LINENO + __off)): '
trap '{ __rc=$?; set +x; } 2>/dev/null; echo "readme-test: README.md:$((LINENO + __off)): exit status $__rc" >&2' ERR
__stop_jobs() {
	local pids
	pids="$(jobs -p)"
	[[ -z "$pids" ]] && return 0
	kill $pids 2>/dev/null || true
	wait $pids 2>/dev/null || true
}
trap '{ set +x; } 2>/dev/null; __stop_jobs' EXIT
__fixtures() {
	printf 'X-Api-Key: example-key\n' >headers.txt
	printf 'FILES_TOKEN=example-token\n' >files.env
}
__newdir() {
	__stop_jobs
	unset MCPGW_TOKEN MCPGW_CA_FILE
	cd "$(mktemp -d "$README_TEST_TMP/dir.XXXXXX")"
	__fixtures
}
__block() {
	set +x
	echo "readme-test: README.md:$1 ${2:+($2)}" >&2
	case "$2" in
	new-dir) __newdir ;;
	"new-dir node")
		__newdir
		echoserver -addr 127.0.0.1:9000 &
		mcpgw serve 2>serve.log &
		mcpgw wait --ready
		;;
	esac
}
__skip() { set +x; local line="$1"; shift; echo "readme-test: README.md:$line skipped: $*" >&2; }
export UPSTREAM_TOKEN=example-upstream-token
cd "$(mktemp -d "$README_TEST_TMP/dir.XXXXXX")"
__fixtures
EOF
cat "$TMP/blocks.sh" >>"$SCRIPT"

log "running the README's sh blocks (timeout ${TIMEOUT}s)"
start=$SECONDS
status=0
# A new session, so that timeout can stop the whole tree of background jobs.
PATH="$BIN:$PATH" README_TEST_TMP="$TMP" timeout --kill-after=10 "$TIMEOUT" setsid bash "$SCRIPT" </dev/null || status=$?
if [[ $status -ne 0 ]]; then
	[[ $status -eq 124 ]] && log "timed out after ${TIMEOUT}s"
	log "FAILED (exit $status) after $((SECONDS - start))s"
	exit 1
fi
log "ok: $(grep -c '^{ __block ' "$TMP/blocks.sh") blocks run, $(grep -c '^{ __skip ' "$TMP/blocks.sh") skipped, in $((SECONDS - start))s"

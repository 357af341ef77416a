# shellcheck shell=bash
# Shared by scripts/conformance.sh (server scenarios) and
# scripts/conformance-client.sh (client auth scenarios): the pinned
# @modelcontextprotocol/conformance suite and the go-sdk's conformance
# programs, on top of scripts/lib.sh (sourced here, so source this instead
# of it). The functions below need TMP (make_tmp) and NODE (require_node22).

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GO_SDK_MODULE="github.com/modelcontextprotocol/go-sdk"

CONF_DIR="$CACHE/conformance"
CONF_PKG="$CONF_DIR/node_modules/@modelcontextprotocol/conformance"

# install_conformance installs the suite with `npm ci` from the committed
# lockfile (scripts/conformance-suite), so the suite and every dependency are
# the same on every machine; reinstalled only when the lockfile changes.
install_conformance() {
	npm_ci_once "$SCRIPT_DIR/conformance-suite" "$CONF_DIR" node_modules/@modelcontextprotocol/conformance/package.json
}

# conformance_cli prints the path of the suite's CLI script.
conformance_cli() {
	local bin
	bin="$("$NODE" -p 'const p=require(process.argv[1]); typeof p.bin==="string"?p.bin:(p.bin.conformance||Object.values(p.bin)[0])' \
		"$CONF_PKG/package.json")"
	echo "$CONF_PKG/$bin"
}

# build_go_sdk_conformance NAME OUT builds the go-sdk's conformance/NAME
# (everything-server, everything-client) at the version our go.mod requires
# into OUT, and sets GO_SDK_DIR. First from the repo root (uses our
# go.mod/go.sum, never modifies them); if our go.sum lacks entries for its
# dependencies, from a writable temp copy of the module (its own
# go.mod/go.sum, dependencies from the module proxy).
build_go_sdk_conformance() {
	local name="$1" out="$2" version
	version="$(cd "$REPO" && go list -mod=readonly -m -f '{{.Version}}' "$GO_SDK_MODULE")" ||
		die "go.mod does not require $GO_SDK_MODULE"
	GO_SDK_DIR="$(cd "$REPO" && go list -mod=readonly -m -f '{{.Dir}}' "$GO_SDK_MODULE")"
	if [[ -z "$GO_SDK_DIR" || ! -d "$GO_SDK_DIR" ]]; then
		# Download outside the repo so our go.sum is never touched.
		GO_SDK_DIR="$(cd "$TMP" && GOWORK=off go mod download -json "$GO_SDK_MODULE@$version" |
			"$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).Dir||""))')"
	fi
	[[ -d "$GO_SDK_DIR/conformance/$name" ]] ||
		die "$GO_SDK_MODULE@$version has no conformance/$name"
	mkdir -p "$(dirname "$out")"
	log "building $name from $GO_SDK_MODULE@$version"
	if (cd "$REPO" && go build -mod=readonly -o "$out" \
		"$GO_SDK_MODULE/conformance/$name") 2>"$TMP/build-$name.log"; then
		return 0
	fi
	log "build from the repo root failed (see below); building from a copy of the module"
	sed 's/^/  /' "$TMP/build-$name.log" | head -n 20 >&2
	rm -rf "$TMP/go-sdk"
	cp -r "$GO_SDK_DIR" "$TMP/go-sdk"
	chmod -R u+w "$TMP/go-sdk"
	(cd "$TMP/go-sdk" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off \
		go build -o "$out" "./conformance/$name") >&2 ||
		die "could not build $name"
	rm -rf "$TMP/go-sdk"
}

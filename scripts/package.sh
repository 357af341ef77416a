#!/usr/bin/env bash
# Builds the mcpgw .deb and .rpm into dist/ with nfpm (deploy/nfpm.yaml).
#
#   scripts/package.sh            # .deb and .rpm for this machine's arch
#   GOARCH=arm64 scripts/package.sh
#   PKG_FORMATS=deb scripts/package.sh
#
# The version comes from `git describe` (a tag v1.2.3 gives 1.2.3; an
# untagged tree gives 0.0.0~git<date>.<commit>), or PKG_VERSION. nfpm runs
# from the Go module proxy at a pinned version, so it needs no install;
# NFPM_BIN names an nfpm binary to use instead (for an offline build, see
# deploy/INSTALL.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NFPM="github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"
formats="${PKG_FORMATS:-deb rpm}"
goarch="${GOARCH:-$(go env GOARCH)}"

commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ -z "${PKG_VERSION:-}" ]]; then
	if tag="$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null)"; then
		PKG_VERSION="${tag#v}"
	else
		when="$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date -u +%Y%m%d)"
		PKG_VERSION="0.0.0~git${when}.${commit}"
	fi
fi
# Debian and RPM versions allow no '-' in the upstream part.
PKG_VERSION="${PKG_VERSION//-/.}"
export PKG_VERSION PKG_ARCH="$goarch"

mkdir -p dist/build
rm -f dist/*.deb dist/*.rpm
echo "building mcpgw ${PKG_VERSION} (${commit}) for linux/${goarch}"
# main.version feeds `mcpgw --version`; the commit and build settings are in
# the binary's build info (go version -m /usr/bin/mcpgw).
CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" go build -trimpath \
	-ldflags "-s -w -X main.version=${PKG_VERSION} -X main.commit=${commit} -X main.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	-o dist/build/mcpgw .

nfpm=(go run "$NFPM")
if [[ -n "${NFPM_BIN:-}" ]]; then
	nfpm=("$NFPM_BIN")
fi
for f in $formats; do
	"${nfpm[@]}" package --config deploy/nfpm.yaml --packager "$f" --target dist/
done
ls -l dist/*.deb dist/*.rpm 2>/dev/null || true

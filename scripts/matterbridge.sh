#!/usr/bin/env bash
# matterbridge.sh — build matterbridge, the relay bot Parley's room benchmark
# compares against (make bench-matterbridge), into the peers cache:
#   ${PARLEY_PEERS:-<repo>/.cache/peers}
#     matterbridge-src/   a writable copy of the pinned module's source
#     bin/matterbridge    the binary
#     logs/matterbridge-*.log
#
# The module is pinned at MATTERBRIDGE_VERSION and taken from the Go module
# cache (`go mod download`), then built with GOFLAGS=-mod=mod. The bridges
# whose dependencies cannot be fetched here, and that the benchmark does not
# use, are left out with matterbridge's own build tags: only XMPP and Matrix
# remain. Nothing of matterbridge is part of Parley; it is a measurement peer.
#
# Idempotent: when bin/matterbridge already reports MATTERBRIDGE_VERSION the
# script does nothing. Not part of `make test`.
set -euo pipefail

MATTERBRIDGE_VERSION=v1.26.0
TAGS="nomsteams nozulip nowhatsapp nowhatsappmulti nodiscord notelegram noslack nomattermost norocketchat nokeybase nogitter nonctalk novk noharmony noirc nomumble nosshchat nosteam notwitch"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
PEERS="${PARLEY_PEERS:-$REPO/.cache/peers}"
BIN="$PEERS/bin"
SRC="$PEERS/matterbridge-src"

step() { printf '==> %s\n' "$*"; }
die() { printf 'matterbridge.sh: ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$BIN" "$PEERS/logs"
want="version: ${MATTERBRIDGE_VERSION#v}"
if [ -x "$BIN/matterbridge" ] && "$BIN/matterbridge" -version 2>/dev/null | grep -q "^$want"; then
	step "matterbridge: $BIN/matterbridge $MATTERBRIDGE_VERSION already built"
	exit 0
fi
command -v go >/dev/null 2>&1 || die "go not found on PATH: needed to build matterbridge"

step "matterbridge: go mod download github.com/42wim/matterbridge@$MATTERBRIDGE_VERSION"
# `go install module@version` does not work for matterbridge here (the module
# proxy does not list its versions), so the pinned version's source is
# fetched and built in a copy of its own module directory.
dir="$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "github.com/42wim/matterbridge@$MATTERBRIDGE_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" || die "go mod download failed"
[ -d "$dir" ] || die "go mod download gave no source directory"

if ! grep -q "^$MATTERBRIDGE_VERSION\$" "$SRC/.parley-version" 2>/dev/null; then
	step "matterbridge: copying $dir to $SRC"
	rm -rf "$SRC"
	cp -r "$dir" "$SRC"
	chmod -R u+w "$SRC"
	echo "$MATTERBRIDGE_VERSION" >"$SRC/.parley-version"
fi

step "matterbridge: go build -tags '<no bridge but XMPP and Matrix>' (takes minutes the first time)"
log="$PEERS/logs/matterbridge-build.log"
if ! (cd "$SRC" && GOFLAGS=-mod=mod go build -tags "$TAGS" -o "$BIN/matterbridge" .) >"$log" 2>&1; then
	tail -n 40 "$log" >&2
	die "go build of matterbridge failed (log $log)"
fi
"$BIN/matterbridge" -version 2>/dev/null | grep -q "^$want" || die "built $BIN/matterbridge does not report $want"
step "matterbridge: built $BIN/matterbridge $MATTERBRIDGE_VERSION"

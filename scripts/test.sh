#!/usr/bin/env bash
# test.sh [GO TEST FLAGS] PACKAGES: go test with progress, for `make test`.
#
# Runs `go test -json` with the given arguments in the current directory and
# shows it through internal/testprogress: a line as each top-level test
# ends, the output of each failing test, go test's own ok/FAIL line per
# package, and after 30 s without news the tests still running.
# Exits with go test's status (pipefail), so a failure fails the pipe too.
#
# Environment:
#   GO     the go command (default go)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
GO="${GO:-go}"

tool="$(mktemp -d "${TMPDIR:-/tmp}/parley-testprogress.XXXXXX")"
trap 'rm -rf "$tool"' EXIT
(cd "$REPO" && "$GO" build -o "$tool/testprogress" ./internal/testprogress)
module="$("$GO" list -m 2>/dev/null || true)"

"$GO" test -json "$@" | "$tool/testprogress" -trim "${module:+$module/}"

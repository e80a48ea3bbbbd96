#!/usr/bin/env bash
# install-peers.sh — install the real peer servers Parley's integration tests and
# demo run against: Prosody, PostgreSQL, Kamailio, sipp, baresip and slixmpp
# (Debian packages), Synapse (Python venv) and Dendrite (built from source with
# Go).
#
# Everything that is not an apt package goes into a cache directory:
#   ${PARLEY_PEERS:-<repo>/.cache/peers}
#     venv/            Python venv with matrix-synapse
#     voip-venv/       Python venv with aiortc and matrix-nio, for the Matrix
#                      VoIP test client (e2e/testdata/voipclient.py); the
#                      pinned versions are recorded in voip-venv/parley-pins
#     dendrite-src/    scratch Go module used to build Dendrite
#     bin/             dendrite, generate-keys, create-account
#     logs/            output of the last apt/pip/go run of each step
#
# The apt packages are installed system-wide. While apt-get runs, the Debian
# policy file /usr/sbin/policy-rc.d forbids starting their services; the
# script then puts that file back as it was (removes it if there was none),
# also when a step fails or the script is interrupted.
#
# Idempotent: every step checks first and is skipped when already done, so a
# second run takes about a second. Prints one line per step; exits non-zero
# with a message naming the failed step.
#
# Environment:
#   PARLEY_PEERS   cache directory (default <repo>/.cache/peers)
#   PYTHON         interpreter used to create the venv (default python3)
#   PARLEY_POLICY_RC  the policy file (default /usr/sbin/policy-rc.d; tests
#                  point it elsewhere)
set -euo pipefail

SYNAPSE_VERSION=1.163.2
DENDRITE_VERSION=v0.15.2
VOIP_PINS="aiortc==1.16.0 matrix-nio==0.26.0"
APT_PACKAGES=(prosody postgresql kamailio sip-tester python3-slixmpp python3-venv)
# Installed when the apt sources offer them (Debian 12 does), skipped otherwise.
# baresip is the metapackage; with --no-install-recommends it brings only
# baresip-core (no GTK/X11/ffmpeg/gstreamer modules).
OPTIONAL_APT_PACKAGES=(baresip)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
PEERS="${PARLEY_PEERS:-$REPO/.cache/peers}"
PYTHON="${PYTHON:-python3}"
POLICY_RC="${PARLEY_POLICY_RC:-/usr/sbin/policy-rc.d}"

step() { printf '==> %s\n' "$*"; }
die() { printf 'install-peers: ERROR: %s\n' "$*" >&2; exit 1; }

# quiet LOGNAME CMD...: run CMD with its output in $PEERS/logs/LOGNAME.log;
# on failure print the tail of that log and return the command's status.
quiet() {
	local log="$PEERS/logs/$1.log" rc=0
	shift
	"$@" >"$log" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ]; then
		printf 'install-peers: command failed (exit %d): %s\n--- tail of %s ---\n' "$rc" "$*" "$log" >&2
		tail -n 40 "$log" >&2
	fi
	return "$rc"
}

# forbid_service_starts writes a policy-rc.d that refuses every service
# start (exit 101), after saving the one there may already be; the EXIT trap
# calls restore_policy_rc, which puts the earlier state back.
policy_rc_written=0
policy_rc_saved=""
forbid_service_starts() {
	if [ -e "$POLICY_RC" ] || [ -L "$POLICY_RC" ]; then
		policy_rc_saved="$(mktemp "${TMPDIR:-/tmp}/parley-policy-rc.XXXXXX")" ||
			die "cannot save $POLICY_RC"
		"${SUDO[@]}" cp -a "$POLICY_RC" "$policy_rc_saved" || die "cannot save $POLICY_RC"
	fi
	policy_rc_written=1
	printf '#!/bin/sh\n# written by parley install-peers.sh while apt-get runs; removed after\nexit 101\n' |
		"${SUDO[@]}" tee "$POLICY_RC" >/dev/null || die "cannot write $POLICY_RC"
	"${SUDO[@]}" chmod 755 "$POLICY_RC" || die "cannot make $POLICY_RC executable"
}

restore_policy_rc() {
	[ "$policy_rc_written" = 1 ] || return 0
	policy_rc_written=0
	if [ -n "$policy_rc_saved" ]; then
		"${SUDO[@]}" mv -f "$policy_rc_saved" "$POLICY_RC" ||
			printf 'install-peers: ERROR: could not restore %s; the earlier one is in %s\n' "$POLICY_RC" "$policy_rc_saved" >&2
	else
		"${SUDO[@]}" rm -f "$POLICY_RC" ||
			printf 'install-peers: ERROR: could not remove %s: services installed later will not start until it is gone\n' "$POLICY_RC" >&2
	fi
}

SUDO=()
trap restore_policy_rc EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$PEERS/logs" || die "cannot create cache dir $PEERS"
PEERS="$(cd "$PEERS" && pwd)"
step "peers cache: $PEERS"

# ---------------------------------------------------------------- apt packages
pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# pkg_available PKG: the apt sources have an installation candidate for PKG.
pkg_available() {
	command -v apt-cache >/dev/null 2>&1 || return 1
	local cand
	cand="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
	[ -n "$cand" ] && [ "$cand" != "(none)" ]
}

missing=()
wanted=("${APT_PACKAGES[@]}")
for p in "${APT_PACKAGES[@]}"; do
	pkg_installed "$p" || missing+=("$p")
done
for p in "${OPTIONAL_APT_PACKAGES[@]}"; do
	if ! pkg_installed "$p"; then
		if pkg_available "$p"; then
			missing+=("$p")
			wanted+=("$p")
		else
			step "apt: optional package $p not in the apt sources, skipped"
		fi
	else
		wanted+=("$p")
	fi
done
# Dendrite needs cgo (go-sqlite3), hence a C compiler.
if [ ! -x "$PEERS/bin/dendrite" ] && ! command -v cc >/dev/null 2>&1; then
	pkg_installed gcc || missing+=(gcc)
fi

if [ ${#missing[@]} -eq 0 ]; then
	step "apt: ${wanted[*]} already installed"
else
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"
	# Run as root directly, otherwise through sudo (if there is one).
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install ${missing[*]}"
		SUDO=(sudo)
	fi
	step "apt: installing ${missing[*]}"
	# Keep Debian from starting the system services (prosody, postgresql,
	# kamailio) on install: the tests run their own instances on free ports.
	forbid_service_starts
	quiet apt-update "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update ||
		die "apt-get update failed"
	quiet apt-install "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
	restore_policy_rc
	step "apt: installed ${missing[*]}"
fi

# ------------------------------------------------------------ synapse venv
VENV="$PEERS/venv"
installed_synapse=""
if [ -x "$VENV/bin/pip" ]; then
	installed_synapse="$("$VENV/bin/pip" show matrix-synapse 2>/dev/null | sed -n 's/^Version: //p' || true)"
fi
if [ "$installed_synapse" = "$SYNAPSE_VERSION" ]; then
	step "synapse: matrix-synapse $SYNAPSE_VERSION already in $VENV"
else
	if [ ! -x "$VENV/bin/python" ]; then
		command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (set PYTHON)"
		step "synapse: creating venv $VENV with $("$PYTHON" --version 2>&1)"
		quiet venv "$PYTHON" -m venv "$VENV" || die "python venv creation failed ($PYTHON -m venv $VENV)"
	fi
	step "synapse: pip install matrix-synapse==$SYNAPSE_VERSION (was: ${installed_synapse:-none})"
	quiet pip "$VENV/bin/python" -m pip install --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION" ||
		die "pip install matrix-synapse==$SYNAPSE_VERSION failed"
	quiet synapse-import "$VENV/bin/python" -c 'import synapse.app.homeserver' || die "synapse installed but does not import"
	step "synapse: installed matrix-synapse $SYNAPSE_VERSION"
fi

# ------------------------------------------------------- voip client venv
VOIP_VENV="$PEERS/voip-venv"
installed_voip="$(cat "$VOIP_VENV/parley-pins" 2>/dev/null || true)"
if [ "$installed_voip" = "$VOIP_PINS" ] && [ -x "$VOIP_VENV/bin/python" ]; then
	step "voip client: $VOIP_PINS already in $VOIP_VENV"
else
	if [ ! -x "$VOIP_VENV/bin/python" ]; then
		command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (set PYTHON)"
		step "voip client: creating venv $VOIP_VENV with $("$PYTHON" --version 2>&1)"
		quiet voip-venv "$PYTHON" -m venv "$VOIP_VENV" || die "python venv creation failed ($PYTHON -m venv $VOIP_VENV)"
	fi
	step "voip client: pip install $VOIP_PINS (was: ${installed_voip:-none})"
	# shellcheck disable=SC2086 # the pins are words
	quiet voip-pip "$VOIP_VENV/bin/python" -m pip install --disable-pip-version-check $VOIP_PINS ||
		die "pip install $VOIP_PINS failed"
	quiet voip-import "$VOIP_VENV/bin/python" -c 'import aiortc, av, nio' || die "voip client packages installed but do not import"
	printf '%s\n' "$VOIP_PINS" >"$VOIP_VENV/parley-pins"
	step "voip client: installed $VOIP_PINS"
fi

# ----------------------------------------------------------------- dendrite
BIN="$PEERS/bin"
if [ -x "$BIN/dendrite" ] && [ -x "$BIN/generate-keys" ] && [ -x "$BIN/create-account" ]; then
	step "dendrite: $BIN/dendrite already built"
else
	command -v go >/dev/null 2>&1 || die "go not found on PATH: needed to build dendrite"
	command -v cc >/dev/null 2>&1 || die "no C compiler (cc): needed to build dendrite (cgo sqlite)"
	SRC="$PEERS/dendrite-src"
	mkdir -p "$SRC" "$BIN"
	step "dendrite: preparing build module $SRC (dendrite $DENDRITE_VERSION)"
	# `go install module@version` is refused for dendrite (replace directives,
	# and the proxy does not list versions), so build from a scratch module.
	if ! grep -q "github.com/element-hq/dendrite $DENDRITE_VERSION" "$SRC/go.mod" 2>/dev/null; then
		rm -f "$SRC/go.mod" "$SRC/go.sum"
		cat >"$SRC/go.mod" <<EOF
module parley.local/peers

go 1.22

require github.com/element-hq/dendrite $DENDRITE_VERSION
EOF
	fi
	cat >"$SRC/tools.go" <<'EOF'
//go:build tools

// Package peers only pins the Dendrite commands that install-peers.sh builds.
package peers

import (
	_ "github.com/element-hq/dendrite/cmd/create-account"
	_ "github.com/element-hq/dendrite/cmd/dendrite"
	_ "github.com/element-hq/dendrite/cmd/generate-keys"
)
EOF
	(cd "$SRC" && quiet dendrite-tidy env GOFLAGS=-mod=mod go mod tidy) || die "go mod tidy in $SRC failed"
	step "dendrite: go install (cgo, takes several minutes the first time)"
	(cd "$SRC" && quiet dendrite-build env CGO_ENABLED=1 GOFLAGS=-mod=mod GOBIN="$BIN" go install \
		github.com/element-hq/dendrite/cmd/dendrite \
		github.com/element-hq/dendrite/cmd/generate-keys \
		github.com/element-hq/dendrite/cmd/create-account) || die "go install of dendrite failed"
	[ -x "$BIN/dendrite" ] || die "go install finished but $BIN/dendrite is missing"
	step "dendrite: built $BIN/dendrite $BIN/generate-keys $BIN/create-account"
fi

step "done: peers ready in $PEERS"

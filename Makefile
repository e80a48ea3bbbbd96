# Parley. The two commands that matter:
#   make demo   run Parley for real beside a local Prosody and Synapse, with a
#               scripted conversation, then leave everything up for your clients
#   make test   every test: lint, unit, fuzz seed corpora, and integration tests
#               against real Prosody, Synapse, Dendrite and PostgreSQL
# Both install what they need first: Debian packages system-wide (apt-get),
# a Synapse venv and Dendrite built from source into .cache/peers. README.md
# lists what that changes on the machine.

GO       ?= go
PEERS    ?= $(CURDIR)/.cache/peers
BIN      := $(CURDIR)/bin
LINT_VERSION := v2.6.0
LINT     := $(PEERS)/bin/golangci-lint
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -s -w -X main.version=$(VERSION)

export PARLEY_PEERS := $(PEERS)

.PHONY: all build test unit lint fuzz bench bench-e2e bench-rooms bench-matterbridge bench-sip bench-presence bench-calls bench-webrtc demo peers docker clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/parley ./cmd/parley

peers:
	./scripts/install-peers.sh

$(LINT):
	GOBIN=$(PEERS)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VERSION)

lint: $(LINT)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(LINT) run ./...

# Every test, with real peers. In CI (CI set) a missing peer fails the run.
# scripts/test.sh shows each test as it ends (go test -json), the output of
# failing tests, go test's own ok/FAIL line per package, and after 30 s
# without news the tests still running.
test: peers lint
	GO=$(GO) ./scripts/test.sh -count=1 -timeout 25m ./...

# Unit tests only: no servers are started.
unit:
	$(GO) test -short -count=1 ./...

# A short run of every fuzz target (the seed corpora also run in make test).
FUZZTIME ?= 20s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME); \
	  done; done

# The router alone, with in-memory networks.
bench:
	$(GO) test ./bridges -run '^$$' -bench Router -benchmem -count 3

# Messages XMPP → Matrix through real Prosody and Synapse: msgs/s, p50/p99.
# N messages; SENDERS conversations at once; RATE msgs/s (0: unpaced).
bench-e2e: peers
	PARLEY_BENCH_SENDERS=$${SENDERS:-1} PARLEY_BENCH_RATE=$${RATE:-0} \
	  $(GO) test ./e2e -run '^$$' -bench XMPPToMatrix -benchtime $${N:-1000}x -count=1 -timeout 20m

# Posts MUC → Matrix room through ROOMS portals on real Prosody and Synapse:
# posts/s, p50/p99, lost. N posts; RATE posts/s (0: unpaced).
bench-rooms: peers
	PARLEY_BENCH_ROOMS=$${ROOMS:-10} PARLEY_BENCH_RATE=$${RATE:-0} \
	  $(GO) test ./e2e -run '^$$' -bench Rooms -benchtime $${N:-2000}x -count=1 -timeout 20m

# Posts MUC → Matrix room and back through matterbridge v1.26.0 and through
# Parley (ROOMS rooms each), in one run on the same Prosody and Synapse, and
# native posts as the baseline: posts/s, p50/p99, added latency, lost,
# duplicated. N posts per rate of RATES (0: flat out, FLAT_N posts).
bench-matterbridge: peers
	scripts/matterbridge.sh
	PARLEY_BENCH_ROOMS=$${ROOMS:-10} PARLEY_BENCH_RATES=$${RATES:-10,25,40,0} \
	  PARLEY_BENCH_POSTS=$${N:-300} PARLEY_BENCH_FLAT_POSTS=$${FLAT_N:-1000} \
	  $(GO) test ./e2e -run '^$$' -bench VersusMatterbridge -benchtime 1x -count=1 -timeout 40m

# sipp MESSAGEs → Parley → Prosody: accepted/s, delivered/s, p50/p99, CPU/msg.
bench-sip: peers
	PARLEY_BENCH_RATE=$${RATE:-200} \
	  $(GO) test ./e2e -run '^$$' -bench SIPToXMPP -benchtime $${N:-2000}x -count=1 -timeout 20m

# WATCHERS SIP presence keys and XMPP_WATCHERS XMPP users watch a Matrix user:
# one change → every NOTIFY answered and every presence stanza received.
bench-presence: peers
	PARLEY_BENCH_WATCHERS=$${WATCHERS:-5000} PARLEY_BENCH_XMPP_WATCHERS=$${XMPP_WATCHERS:-5000} \
	  $(GO) test ./e2e -run '^$$' -bench PresenceNotify -benchtime 3x -count=1 -timeout 20m
	$(GO) test ./bridges -run '^$$' -bench 'PresenceFanout|SubscribeSQLite' -benchtime 20x -count 1

# CALLS concurrent SIP → SIP G.711 calls (sipp) with 50 packets/s each way
# per call through Parley, for WINDOW seconds: calls held, packets/s, added
# latency p50/p99, loss, CPU per 1,000 calls, memory per call.
bench-calls: peers
	PARLEY_BENCH_CALLS=$${CALLS:-1000} PARLEY_BENCH_SECONDS=$${WINDOW:-10} \
	  $(GO) test ./e2e -run '^$$' -bench '^BenchmarkCalls$$' -benchtime 1x -count=1 -timeout 20m

# CALLS SIP ↔ Matrix calls (a plain RTP leg and a WebRTC leg each, phones and
# pion clients in a second process) with 50 packets/s each way, for WINDOW seconds:
# Parley's heap and stacks per WebRTC leg, RSS and CPU per call, loss.
bench-webrtc:
	PARLEY_BENCH_CALLS=$${CALLS:-1,10,100,200} PARLEY_BENCH_SECONDS=$${WINDOW:-10} $(GO) test ./media -run '^$$' -bench '^BenchmarkWebRTCCalls$$' -benchtime 1x -count=1 -timeout 10m

demo: peers build
	$(GO) build -o $(BIN)/parley-demo ./internal/demo
	$(BIN)/parley-demo -parley $(BIN)/parley

docker:
	docker build -t parley:$(VERSION) .

clean:
	rm -rf $(BIN)

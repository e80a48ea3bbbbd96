package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// startAdmin serves /healthz (the process is up), /readyz (every adapter is
// connected; the body tells each one's state) and /metrics on listen, and
// with pprof Go's profiler under /debug/pprof/. An empty listen disables
// it.
func startAdmin(listen string, pprof bool, router *bridges.Router, ports *media.Ports, m *metrics, log *slog.Logger) (*http.Server, error) {
	if listen == "" {
		return nil, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, body := readiness(router.States(), ports, router.ActiveCalls())
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	if pprof {
		mux.HandleFunc("GET /debug/pprof/", httppprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", httppprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", httppprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", httppprof.Trace)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "err", err)
		}
	}()
	return srv, nil
}

type adapterStatus struct {
	State string    `json:"state"`
	Since time.Time `json:"since"`
	Error string    `json:"error,omitempty"`
}

type readyBody struct {
	Ready    bool                     `json:"ready"`
	Adapters map[string]adapterStatus `json:"adapters"`
	Calls    *callsStatus             `json:"calls,omitempty"`
}

// callsStatus tells the media port range's use: with every pair taken, no
// new call can be carried, and Parley is not ready.
type callsStatus struct {
	Active     int    `json:"active"`
	PortPairs  int    `json:"port_pairs"`
	PairsInUse int    `json:"port_pairs_in_use"`
	Error      string `json:"error,omitempty"`
}

func readiness(states map[event.Network]bridges.Status, ports *media.Ports, activeCalls int) (bool, readyBody) {
	body := readyBody{Ready: len(states) > 0, Adapters: map[string]adapterStatus{}}
	if ports != nil {
		total, used := ports.Pairs()
		body.Calls = &callsStatus{Active: activeCalls, PortPairs: total, PairsInUse: used}
		if used >= total {
			lo, hi := ports.Range()
			body.Calls.Error = fmt.Sprintf("media port range %d-%d exhausted", lo, hi)
			body.Ready = false
		}
	}
	for n, s := range states {
		st := adapterStatus{State: s.State.String(), Since: s.Since.UTC()}
		if s.Err != nil {
			st.Error = s.Err.Error()
		}
		body.Adapters[string(n)] = st
		if !s.State.Ready() {
			body.Ready = false
		}
	}
	return body.Ready, body
}

// healthcheck is the container HEALTHCHECK: it succeeds when /healthz answers
// 200 within five seconds.
func healthcheck(url string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
	}
	return nil
}

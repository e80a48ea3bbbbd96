// Command parley runs the Parley gateway between XMPP, Matrix and SIP.
//
// Usage:
//
//	parley [run] [-config parley.yaml]         run the gateway
//	parley check-config [-config parley.yaml]  check the configuration and exit
//	parley gen-registration [-config parley.yaml] [-o registration.yaml]
//	                                           write the Matrix appservice registration
//	parley healthcheck [-url URL]              exit 0 when the admin /healthz answers
//	parley version                             print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/matrix"
	"github.com/parleygw/parley/sip"
	"github.com/parleygw/parley/store"
	"github.com/parleygw/parley/xmpp"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests. It returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("parley "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", envOr("PARLEY_CONFIG", "parley.yaml"), "configuration file (or $PARLEY_CONFIG)")
	out := fs.String("o", "registration.yaml", "gen-registration: file to write (- for standard output)")
	healthURL := fs.String("url", "http://127.0.0.1:9090/healthz", "healthcheck: the admin /healthz URL")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	switch cmd {
	case "run":
		err = serve(*configPath, stderr)
	case "check-config":
		err = checkConfig(*configPath, stdout)
	case "gen-registration":
		err = genRegistration(*configPath, *out, stdout)
	case "healthcheck":
		err = healthcheck(*healthURL)
	case "version":
		_, _ = fmt.Fprintln(stdout, "parley", versionString())
	default:
		_, _ = fmt.Fprintf(stderr, "parley: unknown command %q (want run, check-config, gen-registration, healthcheck or version)\n", cmd)
		return 2
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "parley:", err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return "devel-" + s.Value[:min(12, len(s.Value))]
			}
		}
	}
	return "devel"
}

// codecs returns the address codec of every enabled network.
func codecs(cfg *Config) map[event.Network]mapping.Codec {
	out := map[event.Network]mapping.Codec{}
	if cfg.XMPP != nil {
		out[event.XMPP] = xmpp.AddressCodec{}
	}
	if cfg.Matrix != nil {
		out[event.Matrix] = matrix.AddressCodec{}
	}
	if cfg.SIP != nil {
		out[event.SIP] = sip.AddressCodec{}
	}
	return out
}

// setup loads the configuration and builds the mapping, filling in what the
// adapters derive from it.
func setup(path string) (*Config, *mapping.Map, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	m, err := mapping.New(cfg.Mapping, codecs(cfg))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if cfg.Matrix != nil {
		cfg.Matrix.Namespaces = nil
		for _, p := range m.Patterns(event.Matrix) {
			cfg.Matrix.Namespaces = append(cfg.Matrix.Namespaces, "^"+p+"$")
		}
	}
	return cfg, m, nil
}

func checkConfig(path string, stdout io.Writer) error {
	cfg, _, err := setup(path)
	if err != nil {
		return err
	}
	var networks []string
	if cfg.XMPP != nil {
		networks = append(networks, "xmpp (component "+cfg.XMPP.Domain+")")
	}
	if cfg.Matrix != nil {
		networks = append(networks, "matrix (appservice on "+cfg.Matrix.ServerName+")")
	}
	if cfg.SIP != nil {
		networks = append(networks, fmt.Sprintf("sip (domain %s, %d users)", cfg.SIP.Domain, len(cfg.SIP.Users)))
	}
	_, err = fmt.Fprintf(stdout, "%s: ok: %d identities; networks: %v\n", path, len(cfg.Mapping.Identities), networks)
	return err
}

func genRegistration(path, out string, stdout io.Writer) error {
	cfg, _, err := setup(path)
	if err != nil {
		return err
	}
	if cfg.Matrix == nil {
		return fmt.Errorf("%s: no matrix section: there is nothing to register", path)
	}
	reg, err := matrix.Registration(*cfg.Matrix)
	if err != nil {
		return err
	}
	if out == "-" {
		_, err = stdout.Write(reg)
		return err
	}
	if err := os.WriteFile(out, reg, 0o600); err != nil {
		return fmt.Errorf("write registration: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "wrote %s: add it to the homeserver's app_service_config_files and restart it\n", out)
	return err
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the gateway until SIGTERM or SIGINT; SIGHUP reloads the mapping.
func serve(path string, stderr io.Writer) error {
	cfg, m, err := setup(path)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	ctx := context.Background()

	st, err := store.Open(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()

	metrics := newMetrics()
	router := bridges.NewRouter(st, m, bridges.WithLogger(log), bridges.WithMetrics(metrics))
	if cfg.XMPP != nil {
		a, err := xmpp.New(*cfg.XMPP, xmpp.WithLogger(log.With("network", "xmpp")))
		if err != nil {
			return err
		}
		router.Add(a)
	}
	if cfg.Matrix != nil {
		a, err := matrix.New(*cfg.Matrix, matrix.WithLogger(log.With("network", "matrix")))
		if err != nil {
			return err
		}
		router.Add(a)
	}
	if cfg.SIP != nil {
		a, err := sip.New(*cfg.SIP, sip.WithLogger(log.With("network", "sip")))
		if err != nil {
			return err
		}
		router.Add(a)
	}

	admin, err := startAdmin(cfg.Admin.Listen, cfg.Admin.Pprof, router, metrics, log)
	if err != nil {
		return err
	}
	if err := router.Start(ctx); err != nil {
		return err
	}
	log.Info("parley started", "version", versionString(), "config", path, "admin", cfg.Admin.Listen)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for sig := range signals {
		if sig == syscall.SIGHUP {
			reload(path, router, log)
			continue
		}
		log.Info("stopping", "signal", sig.String(), "timeout", cfg.ShutdownTimeout)
		break
	}
	signal.Stop(signals)

	stopCtx, cancel := context.WithTimeout(ctx, cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{router.Stop(stopCtx)}
	if admin != nil {
		errs = append(errs, admin.Shutdown(stopCtx))
	}
	log.Info("parley stopped")
	return errors.Join(errs...)
}

// reload rereads the configuration file and swaps the mapping section in. Other
// sections need a restart; a file with errors leaves everything as it was.
func reload(path string, router *bridges.Router, log *slog.Logger) {
	_, m, err := setup(path)
	if err != nil {
		log.Error("reload failed; keeping the current mapping", "err", err)
		return
	}
	router.SetMapping(m)
	log.Info("mapping reloaded", "config", path)
}

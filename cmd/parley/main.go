// Command parley runs the Parley gateway between XMPP, Matrix and SIP.
//
// Usage:
//
//	parley [run] [-config FILE]                   run the gateway (the default command)
//	parley check-config [-config FILE] [-strict]  check the configuration and exit
//	parley gen-registration [-config FILE] [-o FILE]
//	                                              write the Matrix appservice registration
//	parley healthcheck [-url URL]                 exit 0 when the admin /healthz answers
//	parley version                                print the version
//	parley help [COMMAND]                         list the commands, or show one's flags
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
	"strings"
	"syscall"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/mapping"
	"github.com/parleygw/parley/matrix"
	"github.com/parleygw/parley/media"
	"github.com/parleygw/parley/sip"
	"github.com/parleygw/parley/store"
	"github.com/parleygw/parley/xmpp"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand of parley, with its own flags.
type command struct {
	name    string
	args    string // what follows the name on the usage line
	summary string // the one line parley help shows
	doc     string // what parley help COMMAND shows under the usage line
	// flags defines the command's flags on fs and returns the function
	// that runs it once they are parsed.
	flags func(fs *flag.FlagSet, stdout, stderr io.Writer) func() error
}

// configFlag defines the -config flag that every command reading the
// configuration has.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", envOr("PARLEY_CONFIG", "parley.yaml"), "the configuration `FILE` (or $PARLEY_CONFIG)")
}

var commands = []command{
	{
		name: "run", args: "[-config FILE]", summary: "run the gateway (the default command)",
		doc: "Run the gateway until SIGTERM or SIGINT (which drain the queues for shutdown_timeout).\n" +
			"SIGHUP reloads the mapping section. Every secret must resolve.",
		flags: func(fs *flag.FlagSet, _, stderr io.Writer) func() error {
			path := configFlag(fs)
			return func() error { return serve(*path, stderr) }
		},
	},
	{
		name: "check-config", args: "[-config FILE] [-strict]", summary: "check the configuration file and exit",
		doc: "Check the configuration file: unknown keys and invalid values are errors naming the file,\n" +
			"the line and the key. A secret written env:NAME or file:PATH that cannot be read here is\n" +
			"a warning naming the variable or file and what it is for: run and gen-registration need it.",
		flags: func(fs *flag.FlagSet, stdout, _ io.Writer) func() error {
			path := configFlag(fs)
			strict := fs.Bool("strict", false, "treat a secret that cannot be read as an error, as run does")
			return func() error { return checkConfig(*path, *strict, stdout) }
		},
	},
	{
		name: "gen-registration", args: "[-config FILE] [-o FILE]", summary: "write the Matrix appservice registration",
		doc: "Write the appservice registration for the homeserver from the matrix and mapping sections:\n" +
			"the tokens, Parley's URL and the ghost namespaces. List it in the homeserver's\n" +
			"app_service_config_files (Dendrite: app_service_api.config_files) and restart it.",
		flags: func(fs *flag.FlagSet, stdout, _ io.Writer) func() error {
			path := configFlag(fs)
			out := fs.String("o", "registration.yaml", "the `FILE` to write (- for standard output)")
			return func() error { return genRegistration(*path, *out, stdout) }
		},
	},
	{
		name: "healthcheck", args: "[-url URL]", summary: "exit 0 when the admin /healthz answers (the container's HEALTHCHECK)",
		doc: "Ask Parley's admin listener whether it is alive; exit 0 on 200 OK, 1 otherwise.",
		flags: func(fs *flag.FlagSet, _, _ io.Writer) func() error {
			url := fs.String("url", "http://127.0.0.1:9090/healthz", "the admin /healthz `URL`")
			return func() error { return healthcheck(*url) }
		},
	},
	{
		name: "version", summary: "print the version",
		doc: "Print Parley's version.",
		flags: func(_ *flag.FlagSet, stdout, _ io.Writer) func() error {
			return func() error {
				_, err := fmt.Fprintln(stdout, "parley", versionString())
				return err
			}
		},
	},
	{
		name: "help", args: "[COMMAND]", summary: "list the commands, or show one command's usage and flags",
		doc: "Without COMMAND, list the commands; with one, show its usage and flags.",
	},
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// usage writes the top-level help: what Parley is and one line per command.
func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Parley bridges SIP/SIMPLE, XMPP and Matrix: messages and presence.\n\n")
	b.WriteString("Usage:\n  parley COMMAND [flags]\n  parley [flags]           the same as parley run [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-17s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'parley help COMMAND' or 'parley COMMAND -h' for a command's flags.\n")
	_, _ = io.WriteString(w, b.String())
}

// commandUsage writes c's usage line, description and flags.
func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	line := "parley " + c.name
	if c.args != "" {
		line += " " + c.args
	}
	_, _ = fmt.Fprintf(w, "Usage: %s\n\n%s\n", line, c.doc)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		_, _ = fmt.Fprintln(w, "\nFlags:")
		out := fs.Output()
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
}

// newFlagSet returns c's flags and the function that runs c.
func newFlagSet(c *command, stdout, stderr io.Writer) (*flag.FlagSet, func() error) {
	fs := flag.NewFlagSet("parley "+c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // run prints it: to stdout for -h, to stderr after a mistake
	var action func() error
	if c.flags != nil {
		action = c.flags(fs, stdout, stderr)
	}
	return fs, action
}

// run is main without the exit, for tests. It returns the exit status: 0,
// 1 when the command failed, 2 for a usage mistake.
func run(args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "-h" || a == "-help" || a == "--help":
			usage(stdout)
			return 0
		case a != "" && a[0] != '-':
			name, args = a, args[1:]
		}
	}
	unknown := func(name string) int {
		_, _ = fmt.Fprintf(stderr, "parley: unknown command %q; run 'parley help' for the list\n", name)
		return 2
	}
	c := findCommand(name)
	if c == nil {
		return unknown(name)
	}
	if c.name == "help" {
		switch {
		case len(args) == 0:
			usage(stdout)
			return 0
		case len(args) > 1:
			_, _ = fmt.Fprintf(stderr, "parley help: want at most one COMMAND, got %q\n", args)
			return 2
		}
		if c = findCommand(args[0]); c == nil {
			return unknown(args[0])
		}
		fs, _ := newFlagSet(c, stdout, stderr)
		commandUsage(stdout, c, fs)
		return 0
	}
	fs, action := newFlagSet(c, stdout, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout, c, fs)
			return 0
		}
		commandUsage(stderr, c, fs) // after flag's own message naming the mistake
		return 2
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "parley %s: unexpected argument %q\n", c.name, fs.Arg(0))
		commandUsage(stderr, c, fs)
		return 2
	}
	if err := action(); err != nil {
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
// adapters derive from it. Every secret must resolve.
func setup(path string) (*Config, *mapping.Map, error) {
	cfg, m, _, err := setupWith(path, false)
	return cfg, m, err
}

// setupWith is setup that, with deferSecrets, returns the secrets it could
// not resolve as warnings instead of failing (see readConfig).
func setupWith(path string, deferSecrets bool) (*Config, *mapping.Map, []string, error) {
	cfg, warnings, err := readConfig(path, deferSecrets)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := mapping.New(cfg.Mapping, codecs(cfg))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if cfg.Matrix != nil {
		cfg.Matrix.Namespaces = nil
		for _, p := range m.Patterns(event.Matrix) {
			cfg.Matrix.Namespaces = append(cfg.Matrix.Namespaces, "^"+p+"$")
		}
	}
	return cfg, m, warnings, nil
}

// checkConfig checks the file at path and prints what it found. Secrets that
// cannot be read here are warnings, unless strict: an admin checks a file
// before the deployment gives it its secrets.
func checkConfig(path string, strict bool, stdout io.Writer) error {
	cfg, _, warnings, err := setupWith(path, !strict)
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
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ok: %d identities; networks: %v\n", path, len(cfg.Mapping.Identities), networks)
	for _, w := range warnings {
		b.WriteString(w + "\n")
	}
	if len(warnings) > 0 {
		fmt.Fprintf(&b, "%s: %d secrets cannot be read here; set them before parley run (check-config -strict makes this an error)\n", path, len(warnings))
	}
	_, err = io.WriteString(stdout, b.String())
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
	opts := []bridges.Option{bridges.WithLogger(log), bridges.WithMetrics(metrics)}
	var ports *media.Ports
	if cfg.Calls != nil {
		if ports, err = cfg.Calls.ports(); err != nil {
			return err
		}
		opts = append(opts, bridges.WithCalls(cfg.Calls.router()))
	}
	router := bridges.NewRouter(st, m, opts...)
	if cfg.XMPP != nil {
		a, err := xmpp.New(*cfg.XMPP, xmpp.WithLogger(log.With("network", "xmpp")))
		if err != nil {
			return err
		}
		router.Add(a)
	}
	if cfg.Matrix != nil {
		mopts := []matrix.Option{matrix.WithLogger(log.With("network", "matrix"))}
		if ports != nil {
			mopts = append(mopts, matrix.WithCalls(cfg.Calls.webrtc(ports)))
			if cfg.Calls.TURNFromHomeserver {
				mopts = append(mopts, matrix.WithHomeserverTURN())
			}
		}
		a, err := matrix.New(*cfg.Matrix, mopts...)
		if err != nil {
			return err
		}
		router.Add(a)
	}
	if cfg.SIP != nil {
		// Without a calls section ports is nil: INVITEs get 503.
		a, err := sip.New(*cfg.SIP, sip.WithLogger(log.With("network", "sip")), sip.WithCalls(ports))
		if err != nil {
			return err
		}
		router.Add(a)
	}

	admin, err := startAdmin(cfg.Admin.Listen, cfg.Admin.Pprof, router, ports, metrics, log)
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

package main

import (
	"bytes"
	"strings"
	"testing"
)

var commandNames = []string{"run", "check-config", "gen-registration", "healthcheck", "version", "help"}

// parley help, -h, --help and -help list every command with one line each,
// on standard output, and exit 0.
func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"-help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(args, &out, &errOut); code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, errOut.String())
			}
			help := out.String()
			if !strings.HasPrefix(help, "Parley ") || !strings.Contains(help, "Usage:\n  parley COMMAND [flags]") {
				t.Errorf("help does not start with what Parley is and how to call it:\n%s", help)
			}
			for _, c := range commandNames {
				if !strings.Contains(help, "\n  "+c+" ") {
					t.Errorf("help does not list %s:\n%s", c, help)
				}
			}
			if strings.Contains(help, "-o ") || strings.Contains(help, "-url") {
				t.Errorf("top-level help shows the flags of single commands:\n%s", help)
			}
		})
	}
}

// Each command has its own usage with only its own flags, from parley help
// COMMAND or parley COMMAND -h.
func TestCommandUsage(t *testing.T) {
	tests := []struct {
		cmd       string
		want, not []string
	}{
		{"run", []string{"Usage: parley run [-config FILE]", "-config"}, []string{"-o ", "-url", "-strict"}},
		{"check-config", []string{"Usage: parley check-config [-config FILE] [-strict]", "-config", "-strict"}, []string{"-o ", "-url"}},
		{"gen-registration", []string{"Usage: parley gen-registration [-config FILE] [-o FILE]", "-config", "-o "}, []string{"-url", "-strict"}},
		{"healthcheck", []string{"Usage: parley healthcheck [-url URL]", "-url"}, []string{"-config", "-o "}},
		{"version", []string{"Usage: parley version"}, []string{"-config", "-url"}},
	}
	for _, tc := range tests {
		for _, args := range [][]string{{"help", tc.cmd}, {tc.cmd, "-h"}, {tc.cmd, "--help"}} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errOut bytes.Buffer
				if code := run(args, &out, &errOut); code != 0 {
					t.Fatalf("exit %d; stderr:\n%s", code, errOut.String())
				}
				for _, w := range tc.want {
					if !strings.Contains(out.String(), w) {
						t.Errorf("usage lacks %q:\n%s", w, out.String())
					}
				}
				for _, n := range tc.not {
					if strings.Contains(out.String(), n) {
						t.Errorf("usage shows another command's flag %q:\n%s", n, out.String())
					}
				}
			})
		}
	}
}

// Mistakes exit 2 with a message on standard error that says what to do.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `parley: unknown command "frobnicate"; run 'parley help' for the list`},
		{[]string{"help", "frobnicate"}, `parley: unknown command "frobnicate"; run 'parley help' for the list`},
		{[]string{"healthcheck", "-config", "x"}, "flag provided but not defined: -config"},
		{[]string{"version", "extra"}, "parley version: unexpected argument \"extra\""},
	}
	// No configuration file where Parley looks: say how to name one (exit 1).
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "-config", "no-such.yaml"}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "no-such.yaml: no such file or directory (name the file with -config FILE or $PARLEY_CONFIG") {
		t.Errorf("a missing config file: exit %d, stderr %q", code, errOut.String())
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, errOut.String())
			}
		})
	}
}

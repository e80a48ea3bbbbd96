// Package scripts tests the shell scripts the Makefile runs.
package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// installPeers prepares a run of install-peers.sh in which every peer but
// the apt packages is already there, and apt-get, dpkg-query, apt-cache and
// sudo are stubs: apt-get install copies the policy file it finds to
// dir/seen-policy, then does what mode says ("ok", "fail", or "hang": it
// writes dir/installing and sleeps). It returns the command and the path the
// script uses as /usr/sbin/policy-rc.d.
func installPeers(t *testing.T, mode string) (cmd *exec.Cmd, dir, policy string) {
	t.Helper()
	dir = t.TempDir()
	peers := filepath.Join(dir, "peers")
	stubs := filepath.Join(dir, "stubs")
	policy = filepath.Join(dir, "policy-rc.d")
	write := func(path, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Synapse, the VoIP client's venv and Dendrite are there already.
	write(filepath.Join(peers, "venv/bin/pip"), "#!/bin/sh\necho 'Version: 1.163.2'\n")
	write(filepath.Join(peers, "voip-venv/bin/python"), "#!/bin/sh\n")
	write(filepath.Join(peers, "voip-venv/parley-pins"), "aiortc==1.16.0 matrix-nio==0.26.0\n")
	for _, b := range []string{"dendrite", "generate-keys", "create-account"} {
		write(filepath.Join(peers, "bin", b), "#!/bin/sh\n")
	}
	// No apt package is installed; every one is available.
	write(filepath.Join(stubs, "dpkg-query"), "#!/bin/sh\necho 'install ok not-installed'\n")
	write(filepath.Join(stubs, "apt-cache"), "#!/bin/sh\necho '  Candidate: 1.0'\n")
	write(filepath.Join(stubs, "sudo"), "#!/bin/sh\nexec \"$@\"\n")
	write(filepath.Join(stubs, "apt-get"), `#!/bin/sh
case "$*" in *install*) ;; *) exit 0 ;; esac
cp "$PARLEY_POLICY_RC" "$STUB_DIR/seen-policy" 2>/dev/null
case "$STUB_MODE" in
fail) echo "E: Unable to locate package" >&2; exit 100 ;;
hang) touch "$STUB_DIR/installing"; sleep 30 ;;
esac
exit 0
`)
	cmd = exec.Command("bash", "install-peers.sh")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own process group, for the signal tests
	cmd.Env = append(os.Environ(),
		"PATH="+stubs+":"+os.Getenv("PATH"),
		"PARLEY_PEERS="+peers,
		"PARLEY_POLICY_RC="+policy,
		"STUB_DIR="+dir,
		"STUB_MODE="+mode,
	)
	return cmd, dir, policy
}

// forbidding reports whether the policy file apt-get saw forbids service
// starts.
func forbidding(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "seen-policy"))
	return err == nil && strings.Contains(string(b), "exit 101")
}

// install-peers.sh forbids service starts while apt-get installs, then
// leaves /usr/sbin/policy-rc.d as it found it: absent, or the admin's own
// file, also when apt-get fails.
func TestInstallPeersRestoresPolicyRC(t *testing.T) {
	const admins = "#!/bin/sh\n# the admin's own policy\nexit 0\n"
	for _, tc := range []struct {
		name, mode string
		before     string // "" means no file
		wantExit   int
	}{
		{"none before", "ok", "", 0},
		{"the admin's own before", "ok", admins, 0},
		{"none before, apt-get fails", "fail", "", 1},
		{"the admin's own before, apt-get fails", "fail", admins, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, dir, policy := installPeers(t, tc.mode)
			if tc.before != "" {
				if err := os.WriteFile(policy, []byte(tc.before), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != tc.wantExit {
				t.Fatalf("exit %d (%v), want %d; output:\n%s", code, err, tc.wantExit, out.String())
			}
			if !forbidding(t, dir) {
				t.Errorf("apt-get ran without a policy-rc.d that forbids service starts; output:\n%s", out.String())
			}
			checkRestored(t, policy, tc.before)
		})
	}
}

// Interrupted while apt-get runs (Ctrl-C, or make killed), the script still
// restores the policy file.
func TestInstallPeersRestoresPolicyRCWhenInterrupted(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, dir, policy := installPeers(t, "hang")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := os.Stat(filepath.Join(dir, "installing")); err == nil {
					break
				}
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatalf("apt-get stub never ran; output:\n%s", out.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			// As from a terminal's Ctrl-C: the whole process group, apt-get
			// included, gets the signal.
			if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if cmd.ProcessState.Success() {
				t.Errorf("the script succeeded after %s", sig)
			}
			checkRestored(t, policy, "")
		})
	}
}

// checkRestored fails unless policy is as before ("" means absent), with
// the same content and mode.
func checkRestored(t *testing.T, policy, before string) {
	t.Helper()
	b, err := os.ReadFile(policy)
	switch {
	case before == "" && err == nil:
		t.Errorf("%s left behind:\n%s", policy, b)
	case before == "" && !os.IsNotExist(err):
		t.Error(err)
	case before != "" && err != nil:
		t.Errorf("the earlier policy-rc.d is gone: %v", err)
	case before != "" && string(b) != before:
		t.Errorf("policy-rc.d not restored:\n%s", b)
	case before != "":
		if fi, err := os.Stat(policy); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("policy-rc.d mode not restored: %v %v", fi.Mode(), err)
		}
	}
}

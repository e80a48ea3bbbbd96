//go:build linux

package peertest

import "syscall"

// sysProcAttr puts the child in its own process group (so that stop can signal
// the whole group) and kills it if the test binary dies without cleanup.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

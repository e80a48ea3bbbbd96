//go:build unix && !linux

package peertest

import "syscall"

// sysProcAttr puts the child in its own process group so that stop can signal
// the whole group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

//go:build unix && !linux

package main

import "syscall"

// sysProcAttr puts parley in its own process group, so that the terminal's
// SIGINT reaches only the demo, which stops parley before the servers.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

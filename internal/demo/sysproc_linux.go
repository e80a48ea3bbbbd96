//go:build linux

package main

import "syscall"

// sysProcAttr puts parley in its own process group, so that the terminal's
// SIGINT reaches only the demo, which stops parley before the servers; the
// kernel kills parley if the demo dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

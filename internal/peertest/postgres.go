package peertest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// PostgresBinDir returns the newest /usr/lib/postgresql/<version>/bin that
// holds initdb (Debian's layout), or an error when there is none.
func PostgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir string
		ver float64
	}
	var cands []cand
	for _, d := range dirs {
		if _, err := lookBinary(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		cands = append(cands, cand{d, v})
	}
	if len(cands) == 0 {
		return "", errors.New("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ver > cands[j].ver })
	return cands[0].dir, nil
}

// StartPostgres starts a throwaway PostgreSQL server and returns a pgx-style
// DSN for its empty database "parley":
//
//	postgres://postgres@127.0.0.1:PORT/parley?sslmode=disable
//
// The cluster is created by initdb (from PostgresBinDir) with superuser
// "postgres" and trust authentication, listens on 127.0.0.1:<free port> and
// keeps its unix socket in its own temporary directory; fsync is off. When
// the test runs as root the server runs as the "postgres" OS user, so the
// directory is made with os.MkdirTemp (t.TempDir's parents are not reachable
// for that user) and removed by t.Cleanup, which also stops the server. The
// log is postgres.log in that directory.
func StartPostgres(t TB) (dsn string) {
	t.Helper()
	bin, err := PostgresBinDir()
	Require(t, "postgresql", err)

	var cred *syscall.Credential
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			Require(t, "postgresql", fmt.Errorf("running as root but no 'postgres' OS user: %w", err))
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}
	}

	dir, err := os.MkdirTemp("", "parley-pg-*")
	if err != nil {
		t.Fatalf("peertest: postgres: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("peertest: postgres: chown %s: %v", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "postgres.log")

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	runCmd(t, "postgres initdb", initdb)

	port := strconv.Itoa(FreePort(t))
	proc := startProcess(t, "postgres", dir, logPath, syscall.SIGINT /* fast shutdown */, cred, nil,
		filepath.Join(bin, "postgres"), "-D", data, "-p", port,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=100")
	t.Cleanup(proc.stop) // runs before the RemoveAll above (cleanups are LIFO)
	proc.waitReady(t, startTimeout(30*time.Second), func() error {
		out, err := exec.Command(filepath.Join(bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres").CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_isready: %w %s", err, out)
		}
		return nil
	})
	createdb := exec.Command(filepath.Join(bin, "createdb"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "parley")
	createdb.Dir = dir
	runCmd(t, "postgres createdb", createdb)
	return "postgres://postgres@127.0.0.1:" + port + "/parley?sslmode=disable"
}

package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/parleygw/parley/store"
)

// TestOutboxConcurrentWrites: many Enqueue and Done calls at once (group
// commit) each get their own outcome: distinct sequence numbers, duplicates
// recognised even within one transaction, and everything stored once they
// return.
func TestOutboxConcurrentWrites(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		ctx := context.Background()
		s := open()
		now := time.UnixMilli(time.Now().UnixMilli())
		const n = 200
		entries := make([]*store.Entry, n)
		dups := make([]bool, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range entries {
			// Every fifth event is sent twice, the second at once.
			entries[i] = entry(fmt.Sprintf("c-%d", i/5*5+min(i%5, 1)), fmt.Sprint("body ", i), now)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				dup, err := s.Enqueue(ctx, entries[i])
				if err != nil {
					t.Errorf("Enqueue %d: %v", i, err)
				}
				dups[i] = dup
			}()
		}
		close(start)
		wg.Wait()
		seqs := map[int64]bool{}
		ids := map[string]int{}
		for i, e := range entries {
			if dups[i] {
				continue
			}
			if seqs[e.Seq] {
				t.Errorf("seq %d given twice", e.Seq)
			}
			seqs[e.Seq] = true
			ids[e.Origin.ID]++
		}
		for id, c := range ids {
			if c != 1 {
				t.Errorf("%s stored %d times", id, c)
			}
		}
		if len(seqs) != 80 {
			t.Errorf("%d entries stored, want 80 (the others are duplicates)", len(seqs))
		}
		for i, e := range entries {
			if dups[i] || i%3 == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Done(ctx, e.Seq); err != nil {
					t.Errorf("Done %d: %v", e.Seq, err)
				}
			}()
		}
		wg.Wait()
		got, err := open().Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			if !seqs[e.Seq] {
				t.Errorf("pending entry %d was never enqueued", e.Seq)
			}
		}
		want := 0
		for i := range entries {
			if !dups[i] && i%3 == 0 {
				want++
			}
		}
		if len(got) != want {
			t.Errorf("%d entries pending, want %d", len(got), want)
		}
	})
}

// TestOutboxGroupCommit: concurrent writes share commits. Each SQLite
// commit appends the pages it changed to the WAL, so 64 writes committed
// one by one append at least 64 frames, and far fewer when they share
// transactions. Another connection holds the database's write lock while
// the writes arrive, as a slow commit would, so that they all wait at once.
func TestOutboxGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	s := open(t, path)
	ctx := context.Background()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	walFrames := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return (fi.Size() - 32) / (24 + 4096) // header, then frames of a page each
	}
	const n = 64
	now := time.Now()
	entries := make([]*store.Entry, n)
	for i := range entries {
		entries[i] = entry(fmt.Sprint("g-", i), "body", now)
	}
	concurrently := func(f func(e *store.Entry) error) int64 {
		before := walFrames()
		lock, err := other.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = lock.Close() }()
		if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, e := range entries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(e); err != nil {
					t.Error(err)
				}
			}()
		}
		time.Sleep(300 * time.Millisecond) // the writes are waiting
		if _, err := lock.ExecContext(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		frames := walFrames() - before
		t.Logf("%d concurrent writes appended %d WAL frames", n, frames)
		return frames
	}
	if frames := concurrently(func(e *store.Entry) error { _, err := s.Enqueue(ctx, e); return err }); frames >= n {
		t.Errorf("%d concurrent Enqueues appended %d WAL frames: they did not share commits", n, frames)
	}
	if frames := concurrently(func(e *store.Entry) error { return s.Done(ctx, e.Seq) }); frames >= n {
		t.Errorf("%d concurrent Dones appended %d WAL frames: they did not share commits", n, frames)
	}
	if got, _ := s.Pending(ctx); len(got) != 0 {
		t.Errorf("%d entries left", len(got))
	}
}

// TestOutboxClosed: a write after Close fails and does not hang.
func TestOutboxClosed(t *testing.T) {
	s, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(context.Background(), entry("x", "y", time.Now())); err == nil {
		t.Error("Enqueue after Close succeeded")
	}
	if err := s.Done(context.Background(), 1); err == nil {
		t.Error("Done after Close succeeded")
	}
}

// TestOutboxAbandonedWrite: an Enqueue whose context ends while it waits
// for a commit returns the context's error and stores nothing, so that the
// sender's retry is not taken for a duplicate.
func TestOutboxAbandonedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	s := open(t, path)
	ctx := context.Background()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	lock, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Close() }()
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	// The first write commits (and waits for the lock); the second waits
	// for it, then gives up.
	first := make(chan error, 1)
	go func() { _, err := s.Enqueue(ctx, entry("first", "body", time.Now())); first <- err }()
	time.Sleep(100 * time.Millisecond)
	gaveUp, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.Enqueue(gaveUp, entry("second", "body", time.Now())); err == nil {
		t.Fatal("Enqueue returned no error although its context ended while the store was locked")
	}
	if _, err := lock.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if dup, err := s.Enqueue(ctx, entry("second", "retried", time.Now())); err != nil || dup {
		t.Errorf("retry of the abandoned event: dup=%v err=%v, want it stored now", dup, err)
	}
	got, _ := s.Pending(ctx)
	if len(got) != 2 {
		t.Errorf("%d entries pending, want 2", len(got))
	}
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit: the outbox's writes (Enqueue and Done) share transactions
// when they arrive together, so that many messages arriving at once share
// one commit (one fsync on PostgreSQL, one append to the WAL on SQLite)
// instead of paying one each. A caller who finds no commit under way
// commits its own write at once, in its own goroutine (the leader); the
// writes that arrive meanwhile wait in a queue, and the next commit takes
// them all. Nothing waits for company, and a lone write costs no handoff
// to another goroutine. Each caller returns only once the transaction
// holding its own write has committed, so "stored before acknowledged"
// holds as before.

// maxBatch bounds the writes of one transaction.
const maxBatch = 256

// batchTimeout bounds one transaction on a database across the network
// (PostgreSQL); its callers get the error. SQLite needs no bound (its busy
// timeout is one), and a context that cannot end spares it a watcher
// goroutine per statement.
const batchTimeout = 30 * time.Second

// errClosed is returned by writes after Close.
var errClosed = errors.New("store is closed")

// errNoEntries is returned by Enqueue without entries.
var errNoEntries = errors.New("enqueue: no entries")

// write states: a write is waiting until a commit takes it, or until its
// caller gives up (its context ended first), whichever comes first.
const (
	writeWaiting int32 = iota
	writeTaken
	writeAbandoned
)

// write is one Enqueue or Done.
type write struct {
	state atomic.Int32
	done  chan struct{} // closed once dup, seq and err are set

	// Enqueue: the duplicate record (network, id, accepted) and the
	// encoded entries, whose seq the commit sets.
	// Done: remove is true and seq is the entry to remove.
	// Done and LinkIDs: links are the message IDs to link.
	remove      bool
	links       []Same
	network, id string
	accepted    int64
	rows        []outboxRow

	// Results.
	seq int64
	dup bool
	err error
}

// outboxRow is one entry of an Enqueue, encoded.
type outboxRow struct {
	origin, payload []byte
	kind            string
	accepted        int64
	seq             int64 // set by the commit
}

// writer runs the writes of the outbox in shared transactions.
type writer struct {
	db      *sql.DB
	bounded bool // transactions time out after batchTimeout

	insertSeen, insertOutbox, deleteOutbox, insertID *sql.Stmt

	mu      sync.Mutex
	idle    *sync.Cond // signalled when leading ends
	queue   []*write   // waiting for the next commit
	leading bool       // a commit is under way
	closed  bool
}

// newWriter prepares the outbox's statements on db.
func newWriter(ctx context.Context, db *sql.DB, bounded bool) (*writer, error) {
	w := &writer{db: db, bounded: bounded}
	w.idle = sync.NewCond(&w.mu)
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&w.insertSeen, `INSERT INTO seen (network, event_id, accepted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`},
		{&w.insertOutbox, `INSERT INTO outbox (origin, kind, payload, accepted_at) VALUES ($1, $2, $3, $4) RETURNING seq`},
		{&w.deleteOutbox, `DELETE FROM outbox WHERE seq = $1`},
		{&w.insertID, `INSERT INTO message_ids (network, id, other_network, other_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`},
	} {
		stmt, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			w.closeStatements()
			return nil, fmt.Errorf("prepare outbox statements: %w", err)
		}
		*p.stmt = stmt
	}
	return w, nil
}

// do runs wr and returns once it has committed. If a commit is under way,
// wr waits for the next one; if ctx ends before a commit has taken wr, wr
// is abandoned and never runs. Once it is taken, do waits for its outcome,
// so that an error always means "not stored".
func (w *writer) do(ctx context.Context, wr *write) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errClosed
	}
	if w.leading {
		wr.done = make(chan struct{})
		w.queue = append(w.queue, wr)
		w.mu.Unlock()
		select {
		case <-wr.done:
			return wr.err
		case <-ctx.Done():
			if wr.state.CompareAndSwap(writeWaiting, writeAbandoned) {
				return ctx.Err()
			}
			<-wr.done
			return wr.err
		}
	}
	w.leading = true
	w.mu.Unlock()
	wr.state.Store(writeTaken)
	w.commit([]*write{wr})
	w.handOff()
	return wr.err
}

// handOff ends a leader's turn: the writes that queued up meanwhile are
// committed by another goroutine, so that the leader's caller need not
// wait for them.
func (w *writer) handOff() {
	w.mu.Lock()
	if len(w.queue) == 0 {
		w.leading = false
		w.idle.Broadcast()
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	go w.lead()
}

// lead commits the queued writes, up to maxBatch at a time, until the
// queue is empty.
func (w *writer) lead() {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.leading = false
			w.idle.Broadcast()
			w.mu.Unlock()
			return
		}
		n := min(len(w.queue), maxBatch)
		batch := w.queue[:n:n]
		w.queue = append([]*write(nil), w.queue[n:]...)
		w.mu.Unlock()
		taken := batch[:0]
		for _, wr := range batch {
			if wr.state.CompareAndSwap(writeWaiting, writeTaken) {
				taken = append(taken, wr)
			}
		}
		if len(taken) > 0 {
			w.commit(taken)
		}
		for _, wr := range taken {
			close(wr.done)
		}
	}
}

// close refuses new writes and returns once the writes already queued are
// committed.
func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	for w.leading {
		w.idle.Wait()
	}
	w.mu.Unlock()
	w.closeStatements()
}

func (w *writer) closeStatements() {
	for _, s := range []*sql.Stmt{w.insertSeen, w.insertOutbox, w.deleteOutbox, w.insertID} {
		if s != nil {
			_ = s.Close()
		}
	}
}

// commit runs the writes of batch, all taken, in one transaction and sets
// their results. If the transaction fails, each write is tried again
// alone, so that one bad write fails only its own caller.
func (w *writer) commit(batch []*write) {
	err := w.inTransaction(batch)
	if err != nil && len(batch) > 1 {
		for _, wr := range batch {
			wr.err = w.inTransaction([]*write{wr})
		}
		return
	}
	for _, wr := range batch {
		wr.err = err
	}
}

// inTransaction runs the writes of batch in one transaction and sets their
// results. It returns the error that failed the transaction, if any.
func (w *writer) inTransaction(batch []*write) (err error) {
	ctx := context.Background()
	if w.bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, batchTimeout)
		defer cancel()
	}
	if len(batch) == 1 && batch[0].remove && len(batch[0].links) == 0 {
		// One statement commits alone.
		if _, err := w.deleteOutbox.ExecContext(ctx, batch[0].seq); err != nil {
			return fmt.Errorf("remove outbox entry %d: %w", batch[0].seq, err)
		}
		return nil
	}
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	// The statements, bound to the transaction when first needed.
	var insertSeen, insertOutbox, deleteOutbox, insertID *sql.Stmt
	bind := func(s **sql.Stmt, prepared *sql.Stmt) *sql.Stmt {
		if *s == nil {
			*s = tx.StmtContext(ctx, prepared)
		}
		return *s
	}
	for _, wr := range batch {
		for _, l := range wr.links {
			for _, p := range [][2]MessageRef{{l.A, l.B}, {l.B, l.A}} {
				if _, err := bind(&insertID, w.insertID).ExecContext(ctx, string(p[0].Network), p[0].ID, string(p[1].Network), p[1].ID); err != nil {
					return fmt.Errorf("link message IDs %v and %v: %w", l.A, l.B, err)
				}
			}
		}
		if !wr.remove && len(wr.rows) == 0 {
			continue // links only
		}
		if wr.remove {
			if _, err := bind(&deleteOutbox, w.deleteOutbox).ExecContext(ctx, wr.seq); err != nil {
				return fmt.Errorf("remove outbox entry %d: %w", wr.seq, err)
			}
			continue
		}
		res, err := bind(&insertSeen, w.insertSeen).ExecContext(ctx, wr.network, wr.id, wr.accepted)
		if err != nil {
			return fmt.Errorf("record %s event %s: %w", wr.network, wr.id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("record %s event %s: %w", wr.network, wr.id, err)
		}
		if wr.dup = n == 0; wr.dup {
			continue
		}
		for i := range wr.rows {
			row := &wr.rows[i]
			if err := bind(&insertOutbox, w.insertOutbox).QueryRowContext(ctx, row.origin, row.kind, row.payload, row.accepted).Scan(&row.seq); err != nil {
				return fmt.Errorf("store %s event %s: %w", wr.network, wr.id, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

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

// Group commit: the outbox's writes (Enqueue and Done) go to one writer
// goroutine, which runs every write waiting at that moment in one
// transaction, so many messages arriving at once share one commit (one
// fsync on PostgreSQL, one append to the WAL on SQLite) instead of paying
// one each. Nothing waits for company: a lone write is committed at once.
// Each caller still returns only once the transaction holding its own
// write has committed, so "stored before acknowledged" holds as before.

// maxBatch bounds the writes of one transaction.
const maxBatch = 256

// batchTimeout bounds one transaction of the writer on a database across
// the network (PostgreSQL); its callers get the error. SQLite needs no
// bound (its busy timeout is one), and a context that cannot end spares it
// a watcher per statement.
const batchTimeout = 30 * time.Second

// errClosed is returned by writes after Close.
var errClosed = errors.New("store is closed")

// write states: a write is waiting until the writer takes it, or until its
// caller gives up (its context ended first), whichever comes first.
const (
	writeWaiting int32 = iota
	writeTaken
	writeAbandoned
)

// write is one Enqueue or Done waiting for the writer.
type write struct {
	state atomic.Int32
	done  chan struct{} // closed once dup, seq and err are set

	// Enqueue: the encoded entry (the duplicate record and the outbox row).
	// Done: remove is true and seq is the entry to remove.
	remove          bool
	network, id     string
	origin, payload []byte
	kind            string
	accepted        int64

	// Results.
	seq int64
	dup bool
	err error
}

// writer runs the writes of the outbox in shared transactions.
type writer struct {
	db      *sql.DB
	bounded bool // transactions time out after batchTimeout
	queue   chan *write
	closing chan struct{}
	stopped chan struct{}

	// mu orders do against close: once closed is set no write enters the
	// queue, so the writer's last drain misses none.
	mu     sync.RWMutex
	closed bool

	insertSeen, insertOutbox, deleteOutbox *sql.Stmt
}

// newWriter prepares the outbox's statements on db and starts the writer.
func newWriter(ctx context.Context, db *sql.DB, bounded bool) (*writer, error) {
	w := &writer{db: db, bounded: bounded, queue: make(chan *write, maxBatch), closing: make(chan struct{}), stopped: make(chan struct{})}
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&w.insertSeen, `INSERT INTO seen (network, event_id, accepted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`},
		{&w.insertOutbox, `INSERT INTO outbox (origin, kind, payload, accepted_at) VALUES ($1, $2, $3, $4) RETURNING seq`},
		{&w.deleteOutbox, `DELETE FROM outbox WHERE seq = $1`},
	} {
		stmt, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			w.closeStatements()
			return nil, fmt.Errorf("prepare outbox statements: %w", err)
		}
		*p.stmt = stmt
	}
	go w.run()
	return w, nil
}

// do hands wr to the writer and waits until it is committed. If ctx ends
// before the writer has taken wr, wr is abandoned and never runs; once it
// is taken, do waits for its outcome, so that an error always means "not
// stored".
func (w *writer) do(ctx context.Context, wr *write) error {
	wr.done = make(chan struct{})
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return errClosed
	}
	select {
	case w.queue <- wr:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return ctx.Err()
	}
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

// close stops the writer once the writes already queued are done.
func (w *writer) close() {
	w.mu.Lock()
	already := w.closed
	w.closed = true
	w.mu.Unlock()
	if !already {
		close(w.closing)
	}
	<-w.stopped
	w.closeStatements()
}

func (w *writer) closeStatements() {
	for _, s := range []*sql.Stmt{w.insertSeen, w.insertOutbox, w.deleteOutbox} {
		if s != nil {
			_ = s.Close()
		}
	}
}

// run takes the writes waiting in the queue, up to maxBatch, and commits
// them together, until close.
func (w *writer) run() {
	defer close(w.stopped)
	batch := make([]*write, 0, maxBatch)
	for {
		select {
		case wr := <-w.queue:
			batch = append(batch[:0], wr)
		case <-w.closing:
			// What was queued before close still runs.
			for {
				select {
				case wr := <-w.queue:
					w.commit([]*write{wr})
				default:
					return
				}
			}
		}
	more:
		for len(batch) < maxBatch {
			select {
			case wr := <-w.queue:
				batch = append(batch, wr)
			default:
				break more
			}
		}
		w.commit(batch)
		clear(batch)
	}
}

// commit runs the writes of batch that their callers still wait for, in
// one transaction. If the transaction fails, each write is tried again
// alone, so that one bad write fails only its own caller.
func (w *writer) commit(batch []*write) {
	taken := batch[:0:0]
	for _, wr := range batch {
		if wr.state.CompareAndSwap(writeWaiting, writeTaken) {
			taken = append(taken, wr)
		}
	}
	if len(taken) == 0 {
		return
	}
	err := w.inTransaction(taken)
	if err != nil && len(taken) > 1 {
		for _, wr := range taken {
			wr.err = w.inTransaction([]*write{wr})
			close(wr.done)
		}
		return
	}
	for _, wr := range taken {
		wr.err = err
		close(wr.done)
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
	if len(batch) == 1 && batch[0].remove {
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
	var insertSeen, insertOutbox, deleteOutbox *sql.Stmt
	bind := func(s **sql.Stmt, prepared *sql.Stmt) *sql.Stmt {
		if *s == nil {
			*s = tx.StmtContext(ctx, prepared)
		}
		return *s
	}
	for _, wr := range batch {
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
		if err := bind(&insertOutbox, w.insertOutbox).QueryRowContext(ctx, wr.origin, wr.kind, wr.payload, wr.accepted).Scan(&wr.seq); err != nil {
			return fmt.Errorf("store %s event %s: %w", wr.network, wr.id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

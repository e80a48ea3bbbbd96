package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver
)

// dialect is the SQL flavour of a database. The queries are written once with
// $N placeholders, which both SQLite and PostgreSQL accept; only the schema
// differs.
type dialect string

const (
	sqliteDialect   dialect = "sqlite"
	postgresDialect dialect = "postgres"
)

// SQL is a Store in SQLite or PostgreSQL.
type SQL struct {
	db      *sql.DB
	dialect dialect
	// w runs Enqueue and Done in shared transactions (group commit).
	w *writer
}

var _ Store = (*SQL)(nil)

// Open opens the store at dsn and brings its schema up to date. A dsn that
// starts with postgres:// or postgresql:// opens PostgreSQL; anything else is
// the path of a SQLite file (an optional "sqlite:" prefix is removed), created
// when missing.
func Open(ctx context.Context, dsn string) (*SQL, error) {
	s := &SQL{dialect: sqliteDialect}
	var err error
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s.dialect = postgresDialect
		s.db, err = sql.Open("pgx", dsn)
	default:
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" {
			return nil, errors.New("open store: empty SQLite path")
		}
		// WAL with synchronous=NORMAL survives a crash of the process (not
		// of the machine) without an fsync per commit; one connection
		// serialises writers, so SQLITE_BUSY cannot happen.
		s.db, err = sql.Open("sqlite", "file:"+path+
			"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)")
		if err == nil {
			s.db.SetMaxOpenConns(1)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", s.dialect, err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		_ = s.db.Close()
		return nil, fmt.Errorf("open %s store: %w", s.dialect, err)
	}
	if err := s.migrate(ctx); err != nil {
		_ = s.db.Close()
		return nil, err
	}
	if s.w, err = newWriter(ctx, s.db, s.dialect == postgresDialect); err != nil {
		_ = s.db.Close()
		return nil, fmt.Errorf("open %s store: %w", s.dialect, err)
	}
	return s, nil
}

// Close implements Store. Writes already waiting are committed first.
func (s *SQL) Close() error {
	s.w.close()
	return s.db.Close()
}

// Enqueue implements Outbox. The duplicate record and the entries are
// written in one transaction, which may hold the writes of other callers
// too (group commit); Enqueue returns once it has committed. When ctx ends
// first, Enqueue returns ctx's error only if nothing was written.
func (s *SQL) Enqueue(ctx context.Context, entries ...*Entry) (dup bool, err error) {
	if len(entries) == 0 {
		return false, errNoEntries
	}
	first := entries[0]
	wr := &write{network: string(first.Origin.From.Network), id: first.Origin.ID, rows: make([]outboxRow, len(entries))}
	for i, e := range entries {
		kind, payload, err := encodeEvent(e.Event)
		if err != nil {
			return false, err
		}
		origin, err := json.Marshal(e.Origin)
		if err != nil {
			return false, fmt.Errorf("enqueue: encode origin: %w", err)
		}
		wr.rows[i] = outboxRow{origin: origin, kind: kind, payload: payload, accepted: e.Accepted.UnixMilli()}
	}
	wr.accepted = wr.rows[0].accepted
	if err := s.w.do(ctx, wr); err != nil {
		return false, fmt.Errorf("enqueue %s event %s: %w", first.Origin.From.Network, first.Origin.ID, err)
	}
	if !wr.dup {
		for i, e := range entries {
			e.Seq = wr.rows[i].seq
		}
	}
	return wr.dup, nil
}

// Done implements Outbox. Like Enqueue, it shares its transaction with
// other writes and returns once the removal has committed.
func (s *SQL) Done(ctx context.Context, seq int64, same ...Same) error {
	for _, l := range same {
		if err := l.valid(); err != nil {
			return err
		}
	}
	if err := s.w.do(ctx, &write{remove: true, seq: seq, links: same}); err != nil {
		return fmt.Errorf("remove outbox entry %d: %w", seq, err)
	}
	return nil
}

// Pending implements Outbox.
func (s *SQL) Pending(ctx context.Context) ([]Entry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, origin, kind, payload, accepted_at FROM outbox ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Entry
	for rows.Next() {
		var (
			e        Entry
			origin   []byte
			kind     string
			payload  []byte
			accepted int64
		)
		if err := rows.Scan(&e.Seq, &origin, &kind, &payload, &accepted); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		if err := json.Unmarshal(origin, &e.Origin); err != nil {
			return nil, fmt.Errorf("read outbox entry %d: decode origin: %w", e.Seq, err)
		}
		if e.Event, err = decodeEvent(kind, payload); err != nil {
			return nil, fmt.Errorf("read outbox entry %d: %w", e.Seq, err)
		}
		e.Accepted = time.UnixMilli(accepted)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// ForgetBefore implements Outbox.
func (s *SQL) ForgetBefore(ctx context.Context, t time.Time) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM seen WHERE accepted_at < $1`, t.UnixMilli()); err != nil {
		return fmt.Errorf("forget old duplicate records: %w", err)
	}
	return nil
}

// GetLink implements Links.
func (s *SQL) GetLink(ctx context.Context, ns, key string) (string, bool, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM links WHERE ns = $1 AND key = $2`, ns, key).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("read link %s/%s: %w", ns, key, err)
	}
	return v, true, nil
}

// PutLink implements Links.
func (s *SQL) PutLink(ctx context.Context, ns, key, value string) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO links (ns, key, value) VALUES ($1, $2, $3) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value`,
		ns, key, value)
	if err != nil {
		return fmt.Errorf("write link %s/%s: %w", ns, key, err)
	}
	return nil
}

// ListLinks implements Links. The prefix is compared with substr, which
// both SQLite and PostgreSQL evaluate bytewise whatever the collation.
func (s *SQL) ListLinks(ctx context.Context, ns, prefix string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT key, value FROM links WHERE ns = $1 AND substr(key, 1, length($2)) = $2`, ns, prefix)
	if err != nil {
		return nil, fmt.Errorf("list links %s/%s*: %w", ns, prefix, err)
	}
	defer func() { _ = rows.Close() }()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("list links %s/%s*: %w", ns, prefix, err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list links %s/%s*: %w", ns, prefix, err)
	}
	return out, nil
}

// DeleteLink implements Links.
func (s *SQL) DeleteLink(ctx context.Context, ns, key string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM links WHERE ns = $1 AND key = $2`, ns, key); err != nil {
		return fmt.Errorf("delete link %s/%s: %w", ns, key, err)
	}
	return nil
}

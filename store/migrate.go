package store

import (
	"context"
	"fmt"
)

// migration is one step of the schema, per dialect. Steps are applied in
// order, each in its own transaction, and never edited once released: a
// change of schema is a new step.
type migration struct {
	sqlite, postgres string
}

var migrations = []migration{
	1: {
		sqlite: `
CREATE TABLE outbox (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	origin      BLOB    NOT NULL,
	kind        TEXT    NOT NULL,
	payload     BLOB    NOT NULL,
	accepted_at INTEGER NOT NULL
);
CREATE TABLE seen (
	network     TEXT    NOT NULL,
	event_id    TEXT    NOT NULL,
	accepted_at INTEGER NOT NULL,
	PRIMARY KEY (network, event_id)
);
CREATE INDEX seen_accepted_at ON seen (accepted_at);
CREATE TABLE links (
	ns    TEXT NOT NULL,
	key   TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (ns, key)
);`,
		postgres: `
CREATE TABLE outbox (
	seq         BIGSERIAL PRIMARY KEY,
	origin      BYTEA  NOT NULL,
	kind        TEXT   NOT NULL,
	payload     BYTEA  NOT NULL,
	accepted_at BIGINT NOT NULL
);
CREATE TABLE seen (
	network     TEXT   NOT NULL,
	event_id    TEXT   NOT NULL,
	accepted_at BIGINT NOT NULL,
	PRIMARY KEY (network, event_id)
);
CREATE INDEX seen_accepted_at ON seen (accepted_at);
CREATE TABLE links (
	ns    TEXT NOT NULL,
	key   TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (ns, key)
);`,
	},
	2: {
		sqlite: `
CREATE TABLE message_ids (
	network       TEXT NOT NULL,
	id            TEXT NOT NULL,
	other_network TEXT NOT NULL,
	other_id      TEXT NOT NULL,
	PRIMARY KEY (network, id, other_network, other_id)
);`,
		postgres: `
CREATE TABLE message_ids (
	network       TEXT NOT NULL,
	id            TEXT NOT NULL,
	other_network TEXT NOT NULL,
	other_id      TEXT NOT NULL,
	PRIMARY KEY (network, id, other_network, other_id)
);`,
	},
}

// migrate brings the schema to the newest version. The version lives in a
// one-row table, so a store opened by a newer Parley is refused rather than
// damaged.
func (s *SQL) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	var version int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&version)
	if err != nil {
		return fmt.Errorf("migrate store: read version: %w", err)
	}
	latest := len(migrations) - 1
	if version > latest {
		return fmt.Errorf("migrate store: schema version %d is newer than this Parley knows (%d)", version, latest)
	}
	for v := version + 1; v <= latest; v++ {
		stmt := migrations[v].sqlite
		if s.dialect == postgresDialect {
			stmt = migrations[v].postgres
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate store to version %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migrate store to version %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migrate store to version %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, v); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migrate store to version %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate store to version %d: %w", v, err)
		}
	}
	return nil
}

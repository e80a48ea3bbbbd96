package store

import "context"

// SetSchemaVersionForTest overwrites the recorded schema version.
func (s *SQL) SetSchemaVersionForTest(ctx context.Context, v int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE schema_version SET version = $1`, v)
	return err
}

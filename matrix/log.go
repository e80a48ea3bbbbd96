package matrix

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"

	"github.com/rs/zerolog"
)

// zerologFor builds the zerolog logger mautrix wants, writing through log.
// A nil log gives a logger that discards everything. The logger's level is
// the lowest level log is enabled for, so mautrix does not format records
// slog would drop.
func zerologFor(log *slog.Logger) zerolog.Logger {
	if log == nil {
		return zerolog.Nop()
	}
	ctx := context.Background()
	level := zerolog.Disabled
	for _, l := range []zerolog.Level{zerolog.ErrorLevel, zerolog.WarnLevel, zerolog.InfoLevel, zerolog.DebugLevel, zerolog.TraceLevel} {
		if log.Enabled(ctx, slogLevel(l)) {
			level = l
		}
	}
	if level == zerolog.Disabled {
		return zerolog.Nop()
	}
	return zerolog.New(slogWriter{log}).Level(level)
}

// slogWriter turns zerolog's JSON records into slog records.
type slogWriter struct{ log *slog.Logger }

// Write implements io.Writer for records without a level.
func (w slogWriter) Write(p []byte) (int, error) { return w.WriteLevel(zerolog.NoLevel, p) }

// WriteLevel implements zerolog.LevelWriter.
func (w slogWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	ctx := context.Background()
	level := slogLevel(l)
	if !w.log.Enabled(ctx, level) {
		return len(p), nil
	}
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		w.log.LogAttrs(ctx, level, "unparsable mautrix log record", slog.String("record", string(p)))
		return len(p), nil
	}
	msg, _ := fields[zerolog.MessageFieldName].(string)
	delete(fields, zerolog.MessageFieldName)
	delete(fields, zerolog.LevelFieldName)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, fields[k]))
	}
	w.log.LogAttrs(ctx, level, msg, attrs...)
	return len(p), nil
}

// slogLevel maps zerolog levels onto slog's (trace below debug; fatal and
// panic, which mautrix does not use, to error).
func slogLevel(l zerolog.Level) slog.Level {
	switch l {
	case zerolog.TraceLevel:
		return slog.LevelDebug - 4
	case zerolog.DebugLevel:
		return slog.LevelDebug
	case zerolog.InfoLevel, zerolog.NoLevel:
		return slog.LevelInfo
	case zerolog.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

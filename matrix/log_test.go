package matrix

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestZerologFor(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	z := zerologFor(log.With("adapter", "matrix"))

	z.Debug().Str("dropped", "yes").Msg("debug is below the slog level")
	z.Info().Str("url", "http://hs/x").Int("status_code", 200).Msg("Request completed")
	z.Error().Str("event_id", "$e").Msg("failed")

	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d records, want 2: %s", len(lines), buf.String())
	}
	if l := lines[0]; l["level"] != "INFO" || l["msg"] != "Request completed" || l["url"] != "http://hs/x" ||
		l["status_code"] != float64(200) || l["adapter"] != "matrix" {
		t.Errorf("record %v", l)
	}
	if l := lines[1]; l["level"] != "ERROR" || l["msg"] != "failed" || l["event_id"] != "$e" {
		t.Errorf("record %v", l)
	}
}

func TestZerologForDiscard(t *testing.T) {
	if z := zerologFor(nil); z.Info().Enabled() {
		t.Error("nil slog logger: zerolog enabled")
	}
	if z := zerologFor(slog.New(slog.DiscardHandler)); z.Error().Enabled() {
		t.Error("discarding slog logger: zerolog enabled")
	}
}

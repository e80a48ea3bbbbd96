package store

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/parleygw/parley/event"
)

// Memory is a Store that keeps everything in memory and loses it on exit. It
// is for tests and benchmarks of the routing core.
type Memory struct {
	mu      sync.Mutex
	seq     int64
	pending map[int64]Entry
	seen    map[seenKey]time.Time
	links   map[[2]string]string
	ids     map[MessageRef]map[MessageRef]bool
}

type seenKey struct {
	network event.Network
	id      string
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{
		pending: make(map[int64]Entry),
		seen:    make(map[seenKey]time.Time),
		links:   make(map[[2]string]string),
	}
}

// Enqueue implements Outbox.
func (m *Memory) Enqueue(_ context.Context, entries ...*Entry) (bool, error) {
	if len(entries) == 0 {
		return false, errNoEntries
	}
	first := entries[0]
	k := seenKey{first.Origin.From.Network, first.Origin.ID}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.seen[k]; dup {
		return true, nil
	}
	m.seen[k] = first.Accepted
	for _, e := range entries {
		m.seq++
		e.Seq = m.seq
		m.pending[e.Seq] = *e
	}
	return false, nil
}

// Done implements Outbox.
func (m *Memory) Done(_ context.Context, seq int64, same ...Same) error {
	for _, l := range same {
		if err := l.valid(); err != nil {
			return err
		}
	}
	m.mu.Lock()
	delete(m.pending, seq)
	for _, l := range same {
		m.link(l)
	}
	m.mu.Unlock()
	return nil
}

// Pending implements Outbox.
func (m *Memory) Pending(context.Context) ([]Entry, error) {
	m.mu.Lock()
	out := make([]Entry, 0, len(m.pending))
	for _, e := range m.pending {
		out = append(out, e)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// ForgetBefore implements Outbox.
func (m *Memory) ForgetBefore(_ context.Context, t time.Time) error {
	m.mu.Lock()
	for k, at := range m.seen {
		if at.Before(t) {
			delete(m.seen, k)
		}
	}
	m.mu.Unlock()
	return nil
}

// GetLink implements Links.
func (m *Memory) GetLink(_ context.Context, ns, key string) (string, bool, error) {
	m.mu.Lock()
	v, ok := m.links[[2]string{ns, key}]
	m.mu.Unlock()
	return v, ok, nil
}

// PutLink implements Links.
func (m *Memory) PutLink(_ context.Context, ns, key, value string) error {
	m.mu.Lock()
	m.links[[2]string{ns, key}] = value
	m.mu.Unlock()
	return nil
}

// DeleteLink implements Links.
func (m *Memory) DeleteLink(_ context.Context, ns, key string) error {
	m.mu.Lock()
	delete(m.links, [2]string{ns, key})
	m.mu.Unlock()
	return nil
}

// ListLinks implements Links.
func (m *Memory) ListLinks(_ context.Context, ns, prefix string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for k, v := range m.links {
		if k[0] == ns && strings.HasPrefix(k[1], prefix) {
			out[k[1]] = v
		}
	}
	return out, nil
}

// Close implements Store.
func (m *Memory) Close() error { return nil }

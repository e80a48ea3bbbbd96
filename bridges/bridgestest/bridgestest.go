// Package bridgestest provides in-memory fakes for testing the routing core
// without any protocol: a Network that records what it is sent and a Codec
// for "user@domain" addresses.
package bridgestest

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Codec splits and joins "user@domain" IDs.
type Codec struct{}

// Split implements mapping.Codec.
func (Codec) Split(id string) (string, string, error) {
	user, domain, ok := strings.Cut(id, "@")
	if !ok || user == "" || domain == "" || strings.ContainsAny(domain, "@/ ") {
		return "", "", errors.New("not user@domain")
	}
	return user, domain, nil
}

// Join implements mapping.Codec.
func (Codec) Join(user, domain string) (string, error) {
	if user == "" || domain == "" || strings.ContainsAny(user+domain, "@/ ") {
		return "", errors.New("cannot join")
	}
	return user + "@" + domain, nil
}

// Network is a fake adapter. Send records events and returns what SendFunc
// returns (nil by default). Host is set by Start.
type Network struct {
	Name     event.Network
	SendFunc func(context.Context, event.Event) (string, error)

	mu     sync.Mutex
	host   bridges.Host
	sent   []event.Event
	notify chan struct{}
}

var _ bridges.Network = (*Network)(nil)

// NewNetwork returns a fake adapter for network n.
func NewNetwork(n event.Network) *Network {
	return &Network{Name: n, notify: make(chan struct{}, 1)}
}

// Network implements bridges.Network.
func (n *Network) Network() event.Network { return n.Name }

// Start implements bridges.Network.
func (n *Network) Start(_ context.Context, h bridges.Host) error {
	n.mu.Lock()
	n.host = h
	n.mu.Unlock()
	h.SetState(n.Name, bridges.Connected, nil)
	return nil
}

// Stop implements bridges.Network.
func (n *Network) Stop(context.Context) error { return nil }

// Host returns the host given to Start.
func (n *Network) Host() bridges.Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.host
}

// Send implements bridges.Network.
func (n *Network) Send(ctx context.Context, evt event.Event) (string, error) {
	if n.SendFunc != nil {
		id, err := n.SendFunc(ctx, evt)
		if err != nil {
			return "", err
		}
		n.record(evt)
		return id, nil
	}
	n.record(evt)
	return evt.Head().ID, nil
}

func (n *Network) record(evt event.Event) {
	n.mu.Lock()
	n.sent = append(n.sent, evt)
	n.mu.Unlock()
	select {
	case n.notify <- struct{}{}:
	default:
	}
}

// Sent returns a copy of what was delivered so far.
func (n *Network) Sent() []event.Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]event.Event(nil), n.sent...)
}

// WaitSent waits until at least count events were delivered or ctx ends, and
// returns what was delivered.
func (n *Network) WaitSent(ctx context.Context, count int) []event.Event {
	for {
		if s := n.Sent(); len(s) >= count {
			return s
		}
		select {
		case <-n.notify:
		case <-ctx.Done():
			return n.Sent()
		}
	}
}

// ErrStorage is what a failing Links returns.
var ErrStorage = errors.New("disk on fire")

// Links is an in-memory bridges.Links that can be made to fail, for
// adapters' tests.
type Links struct {
	mu   sync.Mutex
	m    map[string]string
	fail bool
}

var _ bridges.Links = (*Links)(nil)

// NewLinks returns an empty Links.
func NewLinks() *Links { return &Links{m: map[string]string{}} }

// Get implements bridges.Links.
func (l *Links) Get(_ context.Context, key string) (string, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return "", false, ErrStorage
	}
	v, ok := l.m[key]
	return v, ok, nil
}

// Put implements bridges.Links.
func (l *Links) Put(_ context.Context, key, value string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return ErrStorage
	}
	l.m[key] = value
	return nil
}

// Delete implements bridges.Links.
func (l *Links) Delete(_ context.Context, key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return ErrStorage
	}
	delete(l.m, key)
	return nil
}

// List implements bridges.Links.
func (l *Links) List(_ context.Context, prefix string) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return nil, ErrStorage
	}
	out := map[string]string{}
	for k, v := range l.m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out, nil
}

// Value returns the value of key, even while failing.
func (l *Links) Value(key string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.m[key]
	return v, ok
}

// Set sets key to value, even while failing.
func (l *Links) Set(key, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[key] = value
}

// SetFail makes every later Get, Put, Delete and List fail with ErrStorage, or
// stop failing.
func (l *Links) SetFail(fail bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = fail
}

package bridgestest

import (
	"context"
	"sync"
	"time"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/media"
)

// CallNetwork is a fake adapter that carries calls: Invite returns a fresh
// Endpoint (or InviteErr), Update accepts every offer (or returns
// UpdateErr), and every Invite, Signal and Update is recorded, in order, as
// Calls.
type CallNetwork struct {
	net *Network
	// InviteErr, when set, is what Invite returns.
	InviteErr error
	// UpdateErr, when set, is what Update returns.
	UpdateErr error
	// Held, when set, holds every Update until it is closed.
	Held chan struct{}

	cmu       sync.Mutex
	calls     []event.Event
	endpoints map[string]*Endpoint
	cnotify   chan struct{}
}

var (
	_ bridges.CallNetwork = (*CallNetwork)(nil)
	_ bridges.CallUpdater = (*CallNetwork)(nil)
)

// NewCallNetwork returns a fake adapter with calls for network n.
func NewCallNetwork(n event.Network) *CallNetwork {
	return &CallNetwork{net: NewNetwork(n), endpoints: map[string]*Endpoint{}, cnotify: make(chan struct{}, 1)}
}

// Network implements bridges.Network.
func (n *CallNetwork) Network() event.Network { return n.net.Name }

// Start implements bridges.Network.
func (n *CallNetwork) Start(ctx context.Context, h bridges.Host) error { return n.net.Start(ctx, h) }

// Stop implements bridges.Network.
func (n *CallNetwork) Stop(ctx context.Context) error { return n.net.Stop(ctx) }

// Send implements bridges.Network.
func (n *CallNetwork) Send(ctx context.Context, evt event.Event) (string, error) {
	return n.net.Send(ctx, evt)
}

// CallHost returns the host given to Start, as a CallHost.
func (n *CallNetwork) CallHost() bridges.CallHost { return n.net.Host().(bridges.CallHost) }

// Invite implements bridges.CallNetwork.
func (n *CallNetwork) Invite(_ context.Context, inv *event.CallInvite) (media.Endpoint, error) {
	n.recordCall(inv)
	if n.InviteErr != nil {
		return nil, n.InviteErr
	}
	ep := NewEndpoint()
	n.cmu.Lock()
	n.endpoints[inv.Call] = ep
	n.cmu.Unlock()
	return ep, nil
}

// Signal implements bridges.CallNetwork.
func (n *CallNetwork) Signal(_ context.Context, evt event.Event) error {
	n.recordCall(evt)
	return nil
}

// Update implements bridges.CallUpdater: it records upd and, once Held is
// closed (if set), accepts the offer as it is, or returns UpdateErr.
func (n *CallNetwork) Update(ctx context.Context, upd *event.CallUpdate) (event.Media, error) {
	n.recordCall(upd)
	if n.Held != nil {
		select {
		case <-n.Held:
		case <-ctx.Done():
			return event.Media{}, ctx.Err()
		}
	}
	if n.UpdateErr != nil {
		return event.Media{}, n.UpdateErr
	}
	return upd.Offer, nil
}

func (n *CallNetwork) recordCall(evt event.Event) {
	n.cmu.Lock()
	n.calls = append(n.calls, evt)
	n.cmu.Unlock()
	select {
	case n.cnotify <- struct{}{}:
	default:
	}
}

// Calls returns a copy of the invites and signals so far.
func (n *CallNetwork) Calls() []event.Event {
	n.cmu.Lock()
	defer n.cmu.Unlock()
	return append([]event.Event(nil), n.calls...)
}

// WaitCalls waits until at least count invites and signals were recorded or
// ctx ends, and returns them.
func (n *CallNetwork) WaitCalls(ctx context.Context, count int) []event.Event {
	for {
		if s := n.Calls(); len(s) >= count {
			return s
		}
		select {
		case <-n.cnotify:
		case <-ctx.Done():
			return n.Calls()
		}
	}
}

// Endpoint returns the endpoint Invite made for the leg call.
func (n *CallNetwork) Endpoint(call string) *Endpoint {
	n.cmu.Lock()
	defer n.cmu.Unlock()
	return n.endpoints[call]
}

// Endpoint is a fake media endpoint: it records its peer, what is written
// to it and whether it was closed. Its LastPacket is settable.
type Endpoint struct {
	mu     sync.Mutex
	peer   media.Endpoint
	rtp    [][]byte
	last   time.Time
	closed bool
}

var _ media.Endpoint = (*Endpoint)(nil)

// NewEndpoint returns an open endpoint whose last packet is now.
func NewEndpoint() *Endpoint { return &Endpoint{last: time.Now()} }

// SetPeer implements media.Endpoint.
func (e *Endpoint) SetPeer(p media.Endpoint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peer = p
}

// Peer returns the endpoint's peer.
func (e *Endpoint) Peer() media.Endpoint {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.peer
}

// WriteRTP implements media.Endpoint.
func (e *Endpoint) WriteRTP(p []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rtp = append(e.rtp, append([]byte(nil), p...))
	return nil
}

// WriteRTCP implements media.Endpoint.
func (e *Endpoint) WriteRTCP([]byte) error { return nil }

// SetLastPacket sets what LastPacket returns.
func (e *Endpoint) SetLastPacket(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last = t
}

// LastPacket implements media.Endpoint.
func (e *Endpoint) LastPacket() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// Stats implements media.Endpoint.
func (e *Endpoint) Stats() media.Stats { return media.Stats{} }

// Close implements media.Endpoint.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

// Closed reports whether Close was called.
func (e *Endpoint) Closed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

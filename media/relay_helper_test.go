package media

import (
	"errors"
	"sync"
	"time"

	"github.com/parleygw/parley/event"
)

// RelayConfig sets a relay's media timeout.
type RelayConfig struct {
	// Timeout ends the call when no packet (RTP or RTCP, from either leg)
	// was accepted for this long; 0 means 60 s.
	Timeout time.Duration
	// OnTimeout is called once, from the relay's timer goroutine, with
	// event.HangupMediaTimeout. It must not block.
	OnTimeout func(event.HangupReason)
}

// Relay joins two endpoints (Connect) and watches them for silence (Idle):
// the smallest driver of a call's media, for the package's tests and
// benchmarks. The routing core does the same for every answered call.
type Relay struct {
	a, b    Endpoint
	cfg     RelayConfig
	timer   *time.Timer
	mu      sync.Mutex
	closed  bool
	fired   bool
	started time.Time
}

// NewRelay connects a and b. The relay owns both endpoints from now on:
// Close closes them.
func NewRelay(a, b Endpoint, cfg RelayConfig) *Relay {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	r := &Relay{a: a, b: b, cfg: cfg, started: time.Now()}
	Connect(a, b)
	r.mu.Lock()
	r.timer = time.AfterFunc(cfg.Timeout, r.checkTimeout)
	r.mu.Unlock()
	return r
}

// Close stops the relay and closes both endpoints.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	r.timer.Stop()
	r.mu.Unlock()
	return errors.Join(r.a.Close(), r.b.Close())
}

func (r *Relay) checkTimeout() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.fired {
		return
	}
	idle := Idle(time.Now(), r.started, r.a, r.b)
	if idle < r.cfg.Timeout {
		r.timer.Reset(r.cfg.Timeout - idle)
		return
	}
	r.fired = true
	if r.cfg.OnTimeout != nil {
		r.cfg.OnTimeout(event.HangupMediaTimeout)
	}
}

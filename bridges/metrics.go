package bridges

import (
	"time"

	"github.com/parleygw/parley/event"
)

// Metrics receives the router's measurements. cmd/parley implements it with
// Prometheus; the router calls it on hot paths, so implementations must not
// block and should not allocate.
type Metrics interface {
	// Received counts an event accepted from network n.
	Received(n event.Network, k event.Kind)
	// Delivered counts an event that network n took, latency after it was
	// accepted.
	Delivered(n event.Network, k event.Kind, latency time.Duration)
	// Failed counts an event that could not be delivered to network n.
	Failed(n event.Network, k event.Kind)
	// Retried counts a transient failure of a Send to network n.
	Retried(n event.Network)
	// Duplicate counts an event from network n that was accepted before.
	Duplicate(n event.Network)
	// Queued changes the number of events waiting for delivery by delta.
	Queued(delta int)
}

type nopMetrics struct{}

func (nopMetrics) Received(event.Network, event.Kind)                 {}
func (nopMetrics) Delivered(event.Network, event.Kind, time.Duration) {}
func (nopMetrics) Failed(event.Network, event.Kind)                   {}
func (nopMetrics) Retried(event.Network)                              {}
func (nopMetrics) Duplicate(event.Network)                            {}
func (nopMetrics) Queued(int)                                         {}

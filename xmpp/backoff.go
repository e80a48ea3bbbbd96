package xmpp

import (
	"time"

	"github.com/parleygw/parley/bridges"
)

// backoff is the reconnection policy: bridges.Backoff delays, started again
// from the first after a connection that stayed up for reset.
type backoff struct {
	bridges.Backoff
	reset time.Duration
}

var defaultBackoff = backoff{Backoff: bridges.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}, reset: time.Minute}

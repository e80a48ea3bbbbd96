package bridges

import (
	"log/slog"
	"time"
)

// Option configures a Router.
type Option func(*Router)

// WithLogger sets the router's logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(r *Router) { r.log = l } }

// WithMetrics sets where the router reports its measurements.
func WithMetrics(m Metrics) Option { return func(r *Router) { r.metrics = m } }

// WithRetry sets the backoff between Send attempts after a transient failure.
// An event still undelivered maxAge after it was accepted fails permanently.
func WithRetry(b Backoff, maxAge time.Duration) Option {
	return func(r *Router) { r.retry, r.maxAge = b, maxAge }
}

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(r *Router) { r.now = now } }

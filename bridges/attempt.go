package bridges

import "context"

// Attempt describes the delivery attempt a Send belongs to. The router puts
// it in the context of every Send; an adapter reads it with AttemptOf.
type Attempt struct {
	// Retry counts the earlier Sends of the same entry in this run.
	Retry int
	// Resumed says the entry was taken back from the outbox when the router
	// started: an earlier run accepted it, and may have sent it, or been
	// sending it when it stopped.
	Resumed bool
}

// Repeated reports whether an earlier Send of the same entry may have
// reached the destination, whatever it returned or whether it returned at
// all: a retry, or an entry resumed after a restart. An adapter whose
// network does not recognise a resend by itself in every case can check,
// when Repeated, whether the destination already holds the event before
// sending it again.
func (a Attempt) Repeated() bool { return a.Retry > 0 || a.Resumed }

type attemptKey struct{}

// WithAttempt returns ctx carrying a. The router calls it for each Send;
// tests of adapters call it to stand for the router.
func WithAttempt(ctx context.Context, a Attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

// AttemptOf returns the attempt that ctx, the context of a Send, carries:
// the zero Attempt (a first attempt) when it carries none.
func AttemptOf(ctx context.Context) Attempt {
	a, _ := ctx.Value(attemptKey{}).(Attempt)
	return a
}

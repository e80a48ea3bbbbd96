package bridges

import "errors"

// ErrNoRoute is returned by Host.Dispatch when the recipient maps to nobody.
var ErrNoRoute = errors.New("address maps to nobody")

// ErrRefused is returned by Host.Dispatch when the sender may not reach the
// recipient through the gateway.
var ErrRefused = errors.New("sender may not use the gateway")

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as permanent: the router will not retry the Send that
// returned it and reports the failure to the sender instead. Permanent(nil)
// is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

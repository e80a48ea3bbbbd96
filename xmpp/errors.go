package xmpp

import (
	"errors"

	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

var (
	// errNotConnected is returned by Send while the component is not
	// connected; the router retries later.
	errNotConnected = errors.New("not connected to the XMPP server")
	// errSessionEnded: the session a stanza went out on has ended, so
	// whether the server got it cannot be known.
	errSessionEnded = errors.New("the XMPP session ended")
	// errSecretRefused is reported with bridges.BadCredentials when the
	// server answers the XEP-0114 handshake with <not-authorized/>.
	errSecretRefused = errors.New("the XMPP server refused the component secret")
)

// dispatchError translates an error of bridges.Host.Dispatch into the stanza
// error that answers the sender (RFC 6120 §8.3.3).
func dispatchError(err error) stanza.Error {
	switch {
	case errors.Is(err, bridges.ErrNoRoute):
		return stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}
	case errors.Is(err, bridges.ErrRefused):
		return stanza.Error{Type: stanza.Auth, Condition: stanza.Forbidden}
	default:
		// Storing failed or timed out: the sender may try again later.
		return stanza.Error{Type: stanza.Wait, Condition: stanza.InternalServerError}
	}
}

// failureError translates an event.Failure into the stanza error that tells
// the XMPP sender their message was not delivered. A Failure is final (the
// router has given up), so the types say "do not retry as is".
func failureError(f *event.Failure) stanza.Error {
	var se stanza.Error
	switch f.Condition {
	case event.NoRecipient:
		se = stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}
	case event.Refused:
		se = stanza.Error{Type: stanza.Auth, Condition: stanza.Forbidden}
	case event.Undeliverable:
		se = stanza.Error{Type: stanza.Cancel, Condition: stanza.RecipientUnavailable}
	default:
		se = stanza.Error{Type: stanza.Cancel, Condition: stanza.UndefinedCondition}
	}
	if f.Reason != "" {
		se.Text = map[string]string{"": f.Reason}
	}
	return se
}

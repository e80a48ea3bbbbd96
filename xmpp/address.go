package xmpp

import (
	"errors"
	"fmt"
	"strings"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// AddressCodec splits and builds the IDs of Parley's XMPP addresses: bare JIDs
// (RFC 7622) in their normalised form. It implements mapping.Codec (checked
// in the tests: an adapter does not import mapping). The zero value is ready
// to use.
type AddressCodec struct{}

// Split returns the localpart and the domainpart of the bare JID id, both
// normalised (so "Alice@Example.ORG" gives "alice", "example.org"). A domain
// JID gives an empty user. A full JID, with a resource, is an error: Parley
// addresses are bare JIDs.
func (AddressCodec) Split(id string) (user, domain string, err error) {
	j, err := parseBare(id)
	if err != nil {
		return "", "", err
	}
	return j.Localpart(), j.Domainpart(), nil
}

// Join builds the bare JID user@domain (or domain alone when user is empty),
// normalised. It returns an error when user is not a valid localpart or
// domain not a valid domainpart; it does not escape (XEP-0106) characters
// that a localpart may not hold, such as '@', '/' or spaces.
func (AddressCodec) Join(user, domain string) (string, error) {
	if domain == "" {
		return "", errors.New("build JID: domain is empty")
	}
	j, err := jid.New(user, domain, "")
	if err != nil {
		return "", fmt.Errorf("build JID from %q and %q: %w", user, domain, err)
	}
	return j.String(), nil
}

// parseBare parses id as a bare JID.
func parseBare(id string) (jid.JID, error) {
	j, err := jid.Parse(id)
	if err != nil {
		return jid.JID{}, fmt.Errorf("parse JID %q: %w", id, err)
	}
	if j.Resourcepart() != "" {
		return jid.JID{}, fmt.Errorf("parse JID %q: has a resource; want a bare JID", id)
	}
	return j, nil
}

// inboundAddresses parses the from and to attributes of an inbound stanza
// and checks what every stanza must satisfy before anything else is read:
// a valid sender, a recipient under the component domain, and a sender not
// under it (our own ghosts, or the server echoing our stanzas, are never
// answered, lest we loop). reason says why a stanza fails; it is "" when
// the addresses are fine.
func (a *Adapter) inboundAddresses(rawFrom, rawTo string) (from, to jid.JID, reason string) {
	from, err := jid.Parse(rawFrom)
	if err != nil || rawFrom == "" {
		return from, to, "no valid sender"
	}
	to, err = jid.Parse(rawTo)
	if err != nil || rawTo == "" || to.Domainpart() != a.domain.Domainpart() {
		return from, to, "not addressed to the component domain"
	}
	if from.Domainpart() == a.domain.Domainpart() {
		return from, to, "sent from the component domain"
	}
	return from, to, ""
}

// notAllowed is the error for a sender outside the server's domains.
func (a *Adapter) notAllowed() stanza.Error {
	return stanza.Error{
		Type:      stanza.Cancel,
		Condition: stanza.NotAllowed,
		Text:      map[string]string{"": "Only users of " + strings.Join(a.cfg.ServerDomains, ", ") + " may use this gateway."},
	}
}

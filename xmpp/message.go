package xmpp

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Namespaces of the extensions the adapter reads and writes.
const (
	nsReceipts = "urn:xmpp:receipts"               // XEP-0184 message delivery receipts
	nsNick     = "http://jabber.org/protocol/nick" // XEP-0172 user nickname
	nsSID      = "urn:xmpp:sid:0"                  // XEP-0359 unique and stable stanza IDs
	nsXML      = "http://www.w3.org/XML/1998/namespace"
)

// messageStanza is what the adapter reads of an inbound <message/>.
type messageStanza struct {
	XMLName  xml.Name
	ID       string     `xml:"id,attr"`
	From     string     `xml:"from,attr"`
	To       string     `xml:"to,attr"`
	Type     string     `xml:"type,attr"`
	Lang     string     `xml:"http://www.w3.org/XML/1998/namespace lang,attr"`
	Bodies   []langText `xml:"body"`
	Nick     string     `xml:"http://jabber.org/protocol/nick nick"`
	OriginID *struct {
		ID string `xml:"id,attr"`
	} `xml:"urn:xmpp:sid:0 origin-id"`
	Request *struct{} `xml:"urn:xmpp:receipts request"`
	// StanzaIDs are the XEP-0359 IDs that entities on the way gave the
	// message (a room's archive, say).
	StanzaIDs []struct {
		ID string `xml:"id,attr"`
		By string `xml:"by,attr"`
	} `xml:"urn:xmpp:sid:0 stanza-id"`
	// Delay marks a message delivered late (XEP-0203), such as a room's
	// history.
	Delay *struct {
		Stamp string `xml:"stamp,attr"`
	} `xml:"urn:xmpp:delay delay"`
	// Subject is a room's subject, which a room sends after the history
	// at each join (XEP-0045 §7.2.15).
	Subject *struct {
		Text string `xml:",chardata"`
	} `xml:"subject"`
	// Result is a post from a room's archive that the room sends in
	// answer to an archive query (XEP-0313 §4.2).
	Result *mamResult `xml:"urn:xmpp:mam:2 result"`
	// X is what a room says of the occupant who posted: in its archive of
	// a room that shows real JIDs, their real JID.
	X *mucUser `xml:"http://jabber.org/protocol/muc#user x"`
	// archived is set on a post taken out of an archive result: the
	// room's own copy, history since the room's cursor.
	archived bool
}

// langText is a child element with text in one language, such as <body/>.
type langText struct {
	XMLName xml.Name
	Lang    string `xml:"http://www.w3.org/XML/1998/namespace lang,attr"`
	Text    string `xml:",chardata"`
}

// decodeMessage decodes one <message/> element, start tag included, from r.
func decodeMessage(r xml.TokenReader) (messageStanza, error) {
	var m messageStanza
	if err := xml.NewTokenDecoder(r).Decode(&m); err != nil {
		return messageStanza{}, fmt.Errorf("decode message stanza: %w", err)
	}
	if m.XMLName.Local != "message" {
		return messageStanza{}, fmt.Errorf("decode message stanza: got <%s/>", m.XMLName.Local)
	}
	return m, nil
}

// body returns the text of the <body/> to use: the one in the stanza's
// language (or without a language), else the first.
func (m messageStanza) body() string {
	var first *langText
	for i := range m.Bodies {
		b := &m.Bodies[i]
		// A <body/> in another namespace is not the RFC 6121 body.
		if b.XMLName.Space != m.XMLName.Space {
			continue
		}
		if b.Lang == "" || b.Lang == m.Lang {
			return b.Text
		}
		if first == nil {
			first = b
		}
	}
	if first != nil {
		return first.Text
	}
	return ""
}

// action is what the adapter does with an inbound message.
type action uint8

const (
	// ignore: drop the stanza (logged at debug level).
	ignore action = iota
	// refuse: answer with a stanza error, do not dispatch.
	refuse
	// dispatch: hand the event to the routing core.
	dispatch
)

// inbound is the translation of one inbound message stanza.
type inbound struct {
	action action
	// reason says, for the log, why the stanza is ignored or refused.
	reason string
	// err answers the stanza when action is refuse.
	err stanza.Error
	// evt is the event to dispatch when action is dispatch.
	evt *event.Message
	// receipt is set when the sender asked for an XEP-0184 receipt.
	receipt bool
	// from, to, id and typ are the stanza's own, for replies: from is
	// the sender's full JID and to the JID they wrote to.
	from, to jid.JID
	id       string
	typ      stanza.MessageType
}

// translateMessage decides what to do with the inbound message m and, when
// it is to be dispatched, translates it to an event.Message. It trusts no
// attribute of m: the sender's domain must be one of the server's own and the
// recipient a JID under the component domain.
func (a *Adapter) translateMessage(m messageStanza, now time.Time) inbound {
	in := inbound{id: m.ID, typ: messageType(m.Type)}
	from, to, reason := a.inboundAddresses(m.From, m.To)
	if reason != "" {
		in.reason = reason
		return in
	}
	in.from, in.to = from, to

	switch in.typ {
	case stanza.ErrorMessage:
		// Never answer an error with an error.
		in.reason = "error message"
		return in
	case stanza.GroupChatMessage, stanza.HeadlineMessage:
		in.reason = "unsupported message type " + string(in.typ)
		return in
	case stanza.ChatMessage, stanza.NormalMessage:
	}

	if !a.allowedSender(from) {
		in.action, in.reason = refuse, "sender is not a user of the server's domains"
		in.err = a.notAllowed()
		return in
	}
	if to.Localpart() == "" {
		in.action, in.reason = refuse, "addressed to the component domain itself"
		in.err = stanza.Error{Type: stanza.Cancel, Condition: stanza.ServiceUnavailable}
		return in
	}

	body := m.body()
	if body == "" {
		// Chat states, receipts, markers...: nothing to bridge yet.
		in.reason = "no body"
		return in
	}

	sid := m.ID
	if m.OriginID != nil && m.OriginID.ID != "" {
		sid = m.OriginID.ID
	}
	if sid == "" {
		sid = randomID()
	}
	sender := from.Bare().String()
	in.action = dispatch
	in.receipt = m.Request != nil && m.ID != ""
	in.evt = &event.Message{
		Header: event.Header{
			ID:       sender + "/" + sid,
			From:     event.Address{Network: event.XMPP, ID: sender},
			To:       event.Address{Network: event.XMPP, ID: to.Bare().String()},
			FromName: strings.TrimSpace(m.Nick),
			Time:     now,
		},
		Body: body,
	}
	return in
}

// messageType reads a type attribute as RFC 6121 §5.2.2 says: absent or
// unknown means "normal".
func messageType(s string) stanza.MessageType {
	var t stanza.MessageType
	_ = t.UnmarshalXMLAttr(xml.Attr{Value: s}) // never fails
	return t
}

// allowedSender reports whether from is a user of one of the server's
// domains (and so not the component domain or a remote server).
func (a *Adapter) allowedSender(from jid.JID) bool {
	if from.Localpart() == "" {
		return false
	}
	_, ok := a.serverDomains[from.Domainpart()]
	return ok
}

// errorReply answers the message (from, to, id) with se, from the JID it was
// written to.
func errorReply(in inbound, se stanza.Error) xml.TokenReader {
	return stanza.Message{ID: in.id, From: in.from, To: in.to}.Error(se)
}

// receiptReply acknowledges the message in (XEP-0184 §5.2) from the JID it
// was written to. Its own ID is derived from the event's, so that the
// receipts for a resent message are identical.
func receiptReply(in inbound) xml.TokenReader {
	return stanza.Message{ID: stableID("receipt " + in.evt.ID), From: in.to, To: in.from, Type: in.typ}.Wrap(
		element(xml.Name{Space: nsReceipts, Local: "received"}, []xml.Attr{attr("id", in.id)}),
	)
}

// stableID derives the stanza ID of an outbound event from its source ID, so
// that sending the same event again (after a crash) gives the same ID and the
// recipient's client can recognise the duplicate. An event without a source
// ID gets a random one.
func stableID(sourceID string) string {
	if sourceID == "" {
		return "parley-" + randomID()
	}
	sum := sha256.Sum256([]byte(sourceID))
	return "parley-" + hex.EncodeToString(sum[:8])
}

// outboundMessage translates m into a chat message from a ghost JID under
// the component domain. It returns the stanza ID and the stanza.
func (a *Adapter) outboundMessage(m *event.Message) (string, xml.TokenReader, error) {
	from, to, err := a.outboundAddresses(&m.Header)
	if err != nil {
		return "", nil, err
	}
	if m.Body == "" {
		return "", nil, bridges.Permanent(errors.New("message has no body"))
	}
	id := stableID(m.ID)
	payload := []xml.TokenReader{
		element(xml.Name{Local: "body"}, nil, xmlstream.Token(xml.CharData(m.Body))),
	}
	if m.FromName != "" {
		payload = append(payload, element(xml.Name{Space: nsNick, Local: "nick"}, nil, xmlstream.Token(xml.CharData(m.FromName))))
	}
	payload = append(payload, element(xml.Name{Space: nsSID, Local: "origin-id"}, []xml.Attr{attr("id", id)}))
	msg := stanza.Message{ID: id, From: from, To: to, Type: stanza.ChatMessage}
	return id, msg.Wrap(xmlstream.MultiReader(payload...)), nil
}

// outboundFailure translates f into an error message that answers the
// stanza f.EventID names. It goes to the sender's full JID when the adapter
// remembers it: a server drops error messages to a bare JID (RFC 6121
// §8.5.2.1.1). It returns the stanza ID and the stanza.
func (a *Adapter) outboundFailure(f *event.Failure) (string, xml.TokenReader, error) {
	from, to, err := a.outboundAddresses(&f.Header)
	if err != nil {
		return "", nil, err
	}
	to = a.senders.resolve(f.EventID, to)
	id := stanzaIDOf(f.EventID)
	msg := stanza.Message{ID: id, From: from, To: to, Type: stanza.ErrorMessage}
	return id, msg.Wrap(failureError(f).TokenReader()), nil
}

// outboundAddresses checks the addresses of an outbound event: From must be
// a JID under the component domain (the server refuses anything else from a
// component), To any valid JID. Errors are permanent.
func (a *Adapter) outboundAddresses(h *event.Header) (from, to jid.JID, err error) {
	if h.From.Network != event.XMPP || h.To.Network != event.XMPP {
		return from, to, bridges.Permanent(fmt.Errorf("send from %s to %s: addresses are not on the XMPP network", h.From, h.To))
	}
	from, err = jid.Parse(h.From.ID)
	if err != nil {
		return from, to, bridges.Permanent(fmt.Errorf("send from %q: %w", h.From.ID, err))
	}
	if from.Domainpart() != a.domain.Domainpart() {
		return from, to, bridges.Permanent(fmt.Errorf("send from %q: not under the component domain %s", h.From.ID, a.domain))
	}
	to, err = jid.Parse(h.To.ID)
	if err != nil || h.To.ID == "" {
		return from, to, bridges.Permanent(fmt.Errorf("send to %q: not a valid JID: %w", h.To.ID, err))
	}
	return from, to, nil
}

// stanzaIDOf returns the stanza ID part of an event ID the adapter made,
// "<bare JID>/<stanza ID>". A bare JID holds no '/', so the ID is what
// follows the first one. Other IDs are returned whole.
func stanzaIDOf(eventID string) string {
	bare, id, ok := strings.Cut(eventID, "/")
	if !ok {
		return eventID
	}
	if _, err := parseBare(bare); err != nil {
		return eventID
	}
	return id
}

// randomID returns a random stanza ID.
func randomID() string {
	return rand.Text()[:16]
}

// element returns the tokens of the element name with attrs and children.
func element(name xml.Name, attrs []xml.Attr, children ...xml.TokenReader) xml.TokenReader {
	return xmlstream.Wrap(xmlstream.MultiReader(children...), xml.StartElement{Name: name, Attr: attrs})
}

func attr(name, value string) xml.Attr {
	return xml.Attr{Name: xml.Name{Local: name}, Value: value}
}

// senders remembers which full JIDs sent recent messages, so that a Failure
// about one of them reaches the client that sent it. It is bounded and kept
// in memory only: after a restart, failures go to the bare JID (or the last
// resource seen since).
type senders struct {
	mu      sync.Mutex
	byEvent fifoMap // event ID → full JID
	byBare  fifoMap // bare JID → last full JID seen
}

func newSenders(size int) *senders {
	return &senders{byEvent: newFIFOMap(size), byBare: newFIFOMap(size)}
}

// remember records that the full JID from sent the event eventID.
func (s *senders) remember(eventID string, from jid.JID) {
	if from.Resourcepart() == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byEvent.put(eventID, from.String())
	s.byBare.put(from.Bare().String(), from.String())
}

// resolve returns where to send an error about eventID to the bare JID to.
func (s *senders) resolve(eventID string, to jid.JID) jid.JID {
	if to.Resourcepart() != "" {
		return to
	}
	s.mu.Lock()
	byEvent, ok1 := s.byEvent.get(eventID)
	byBare, ok2 := s.byBare.get(to.String())
	s.mu.Unlock()
	for _, c := range []struct {
		full string
		ok   bool
	}{{byEvent, ok1}, {byBare, ok2}} {
		if !c.ok {
			continue
		}
		if j, err := jid.Parse(c.full); err == nil && j.Bare().Equal(to) {
			return j
		}
	}
	return to
}

// fifoMap is a map that forgets its oldest key beyond a fixed size.
type fifoMap struct {
	m    map[string]string
	keys []string
	next int
}

func newFIFOMap(size int) fifoMap {
	return fifoMap{m: make(map[string]string, size), keys: make([]string, 0, size)}
}

func (f *fifoMap) put(k, v string) {
	if _, ok := f.m[k]; !ok {
		if len(f.keys) < cap(f.keys) {
			f.keys = append(f.keys, k)
		} else {
			delete(f.m, f.keys[f.next])
			f.keys[f.next] = k
			f.next = (f.next + 1) % len(f.keys)
		}
	}
	f.m[k] = v
}

func (f *fifoMap) get(k string) (string, bool) {
	v, ok := f.m[k]
	return v, ok
}

package xmpp

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"

	"github.com/parleygw/parley/bridges"
)

// dispatchTimeout bounds one call of Host.Dispatch. The session reads no
// other stanza meanwhile.
const dispatchTimeout = 30 * time.Second

// handler returns the xmpp.Handler that serves one session. Serve calls it on
// the session's goroutine, one stanza at a time, so the messages of a sender
// reach Host.Dispatch in the order the server delivered them. ctx ends when
// the adapter stops.
//
// The handler returns an error only when it cannot write to the session;
// Serve then ends the stream. A stanza it cannot read is logged and dropped.
//
// Replies to messages and presence go to out, which writes them apart
// (see replies); an IQ's answer is written inline, as the session checks
// that every request got one.
func (a *Adapter) handler(ctx context.Context, out *replies) xmpp.Handler {
	return xmpp.HandlerFunc(func(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
		r := xmlstream.MultiReader(xmlstream.Token(*start), t)
		if start.Name.Local != "iq" && a.isServed(servedBare(attrValue(start, "to"))) {
			return a.handleServed(ctx, &replyBuffer{ctx: ctx, r: out}, r, start.Name.Local)
		}
		switch start.Name.Local {
		case "message":
			return a.handleMessage(ctx, &replyBuffer{ctx: ctx, r: out}, r)
		case "iq":
			return a.handleIQ(t, r)
		case "presence":
			if room, ok := a.fromRoom(attrValue(start, "from")); ok {
				return a.handleRoomPresence(ctx, r, room)
			}
			return a.handlePresence(ctx, &replyBuffer{ctx: ctx, r: out}, r)
		default:
			a.log.Debug("xmpp unknown element ignored", "element", start.Name.Local)
			return nil
		}
	})
}

// handleMessage reads one <message/> from r and dispatches, refuses or
// ignores it; replies go to w.
func (a *Adapter) handleMessage(ctx context.Context, w xmlstream.TokenWriter, r xml.TokenReader) error {
	m, err := decodeMessage(r)
	if err != nil {
		a.log.Warn("xmpp malformed message dropped", "error", err)
		return nil
	}
	if room, ok := a.fromRoom(m.From); ok {
		return a.handleRoomMessage(ctx, m, room)
	}
	in := a.translateMessage(m, a.now())
	switch in.action {
	case ignore:
		a.log.Debug("xmpp message ignored", "reason", in.reason, "from", m.From, "to", m.To, "id", m.ID)
		return nil
	case refuse:
		a.log.Info("xmpp message refused", "reason", in.reason, "from", m.From, "to", m.To, "id", m.ID, "condition", string(in.err.Condition))
		return writeStanza(w, errorReply(in, in.err))
	case dispatch:
	}

	a.senders.remember(in.evt.ID, in.from)
	dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
	err = a.host.Dispatch(dctx, in.evt)
	cancel()
	if err != nil {
		se := dispatchError(err)
		level := slog.LevelError
		if errors.Is(err, bridges.ErrNoRoute) || errors.Is(err, bridges.ErrRefused) {
			level = slog.LevelInfo
		}
		a.log.Log(ctx, level, "xmpp message not accepted", "event", in.evt.ID, "from", m.From, "to", m.To, "condition", string(se.Condition), "error", err)
		return writeStanza(w, errorReply(in, se))
	}
	a.log.Debug("xmpp message dispatched", "event", in.evt.ID, "from", m.From, "to", m.To)
	if in.receipt {
		return writeStanza(w, receiptReply(in))
	}
	return nil
}

// iqStanza is what the adapter reads of an inbound <iq/>.
type iqStanza struct {
	XMLName xml.Name
	ID      string `xml:"id,attr"`
	From    string `xml:"from,attr"`
	To      string `xml:"to,attr"`
	Type    string `xml:"type,attr"`
	Payload []struct {
		XMLName xml.Name
		Node    string `xml:"node,attr"`
	} `xml:",any"`
	// Fin ends the answer to an archive query (XEP-0313 §4.3).
	Fin *mamFin `xml:"urn:xmpp:mam:2 fin"`
	// Error is the error of an error answer.
	Error *stanza.Error `xml:"error"`
}

// handleIQ reads one <iq/> from r and answers it on w. Every get or set gets
// a result or an error (RFC 6120 §8.2.3). The component's only requests
// are the pings of its delivery barriers: a result or error answering one
// ends that barrier; others are dropped.
func (a *Adapter) handleIQ(w xmlstream.TokenWriter, r xml.TokenReader) error {
	var iq iqStanza
	if err := xml.NewTokenDecoder(r).Decode(&iq); err != nil {
		a.log.Warn("xmpp malformed iq dropped", "error", fmt.Errorf("decode iq stanza: %w", err))
		return nil
	}
	if iq.Type != string(stanza.GetIQ) && iq.Type != string(stanza.SetIQ) {
		a.answerPing(iq) // the answer a delivery barrier or a request waits for
		return nil
	}
	from, err := jid.Parse(iq.From)
	if err != nil || iq.From == "" || iq.ID == "" {
		a.log.Debug("xmpp iq without sender or id ignored", "from", iq.From, "id", iq.ID)
		return nil
	}
	to, err := jid.Parse(iq.To)
	if err != nil || iq.To == "" {
		to = a.domain
	}
	payload, se := a.answerIQ(iq, from, to)
	if se != nil {
		a.log.Debug("xmpp iq refused", "from", iq.From, "to", iq.To, "id", iq.ID, "condition", string(se.Condition))
		return writeStanza(w, stanza.IQ{ID: iq.ID, From: to, To: from, Type: stanza.ErrorIQ}.Wrap(se.TokenReader()))
	}
	return writeStanza(w, stanza.IQ{ID: iq.ID, From: to, To: from, Type: stanza.ResultIQ}.Wrap(payload))
}

// answerIQ returns the payload of the result of iq, a get or set from from to
// to, or the error that answers it.
func (a *Adapter) answerIQ(iq iqStanza, from, to jid.JID) (xml.TokenReader, *stanza.Error) {
	if _, room := a.fromRoom(iq.From); room && iq.Type == string(stanza.GetIQ) && len(iq.Payload) == 1 &&
		iq.Payload[0].XMLName == (xml.Name{Space: nsPing, Local: "ping"}) {
		// A room that passes an occupant's self-ping on to it
		// (XEP-0410 §3, where the server does not answer it itself):
		// the occupant is there.
		return nil, nil
	}
	if _, ok := a.serverDomains[from.Domainpart()]; !ok {
		return nil, &stanza.Error{Type: stanza.Cancel, Condition: stanza.NotAllowed}
	}
	if to.Domainpart() != a.domain.Domainpart() {
		return nil, &stanza.Error{Type: stanza.Cancel, Condition: stanza.ServiceUnavailable}
	}
	if len(iq.Payload) != 1 {
		// RFC 6120 §8.2.3: a get or set holds exactly one payload.
		return nil, &stanza.Error{Type: stanza.Modify, Condition: stanza.BadRequest}
	}
	p := iq.Payload[0]
	if room, _, ok := a.servedRoom(to.String()); ok && to.Resourcepart() != "" {
		if p.XMLName == (xml.Name{Space: ping.NS, Local: "ping"}) && iq.Type == string(stanza.GetIQ) {
			if se := a.servedSelfPing(room, from, to.Resourcepart()); se != nil {
				return nil, se
			}
			return xmlstream.MultiReader(), nil
		}
	}
	if iq.Type != string(stanza.GetIQ) || p.XMLName.Local != "query" {
		return nil, &stanza.Error{Type: stanza.Cancel, Condition: stanza.ServiceUnavailable}
	}
	switch p.XMLName.Space {
	case nsDiscoInfo:
		if p.Node != "" {
			return nil, &stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}
		}
		return discoInfoQuery(a.discoInfo(to)), nil
	case nsDiscoItems:
		if p.Node != "" {
			return nil, &stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}
		}
		return discoItemsQuery(a.discoItems(to)...), nil
	}
	return nil, &stanza.Error{Type: stanza.Cancel, Condition: stanza.ServiceUnavailable}
}

// attrValue returns the value of the attribute name (in no namespace) of
// start, or "".
func attrValue(start *xml.StartElement, name string) string {
	for _, a := range start.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// writeStanza writes the stanza r to w, the session's writer inside a
// handler.
func writeStanza(w xmlstream.TokenWriter, r xml.TokenReader) error {
	if _, err := xmlstream.Copy(w, r); err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

var (
	// errNotRegistered is returned (not permanent) by Send while the
	// recipient, a user of the domain, has no registered contact: the
	// router retries, and Reachable wakes it when they register.
	errNotRegistered = errors.New("the user has no registered contact")
	// errNotStarted is returned by Send before Start.
	errNotStarted = errors.New("the SIP adapter is not started")
)

// target is where one MESSAGE goes.
type target struct {
	// uri is the Request-URI: a registered contact, or the recipient's AOR.
	uri sip.Uri
	// transport (UDP, TCP, TLS) and dest (host:port) override what sipgo
	// derives from the URI (or the Route); empty to let it.
	transport, dest string
	// route is the outbound proxy, for recipients outside the domain.
	route *sip.Uri
	// name names the target in errors.
	name string
}

// deliver sends the MESSAGE o for the event with header h: to every live
// contact of the recipient when they are a user of the adapter's domain, or
// to their AOR through the outbound proxy (or their domain) otherwise. It
// returns the Call-ID once one target accepted it with 2xx.
func (a *Adapter) deliver(ctx context.Context, h *event.Header, o outboundMessage) (string, error) {
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("send MESSAGE to %s: %w", o.to, err)
	}
	if h.From.Network != event.SIP || h.To.Network != event.SIP {
		return fail(bridges.Permanent(fmt.Errorf("addresses %s → %s are not on the SIP network", h.From, h.To)))
	}
	codec := AddressCodec{}
	_, fromHost, err := codec.Split(o.from)
	if err != nil {
		return fail(bridges.Permanent(err))
	}
	if fromHost != a.domain {
		return fail(bridges.Permanent(fmt.Errorf("sender %s is not under the domain %s", o.from, a.domain)))
	}
	toUser, toHost, err := codec.Split(o.to)
	if err != nil {
		return fail(bridges.Permanent(err))
	}
	_, links, client, ua := a.stack()
	if client == nil {
		return fail(errNotStarted)
	}

	var targets []target
	if toHost == a.domain {
		if !a.users[toUser] {
			return fail(bridges.Permanent(fmt.Errorf("%s is not a user of %s", o.to, a.domain)))
		}
		now := a.now()
		reg, err := a.loadRegistration(ctx, links, toUser, now)
		if err != nil {
			return fail(err)
		}
		if len(reg.Bindings) == 0 {
			if !h.Time.IsZero() && now.Sub(h.Time) > a.cfg.OfflineTTL {
				return fail(bridges.Permanent(fmt.Errorf("%w for %s (offline_ttl)", errNotRegistered, a.cfg.OfflineTTL)))
			}
			return fail(errNotRegistered)
		}
		for _, b := range reg.Bindings {
			t, err := a.contactTarget(ua, b)
			if err != nil {
				a.log.Warn("sip binding unusable", "aor", o.to, "contact", b.Contact, "err", err)
				continue
			}
			targets = append(targets, t)
		}
		if len(targets) == 0 {
			return fail(errNotRegistered)
		}
	} else {
		var u sip.Uri
		_ = sip.ParseUri(o.to, &u) // canonical AORs parse
		targets = []target{{uri: u, route: a.proxy, name: o.to}}
	}

	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.sendTo(ctx, client, o, t)
		}()
	}
	wg.Wait()
	permanent := true
	for _, err := range errs {
		if err == nil {
			return a.callID(o), nil
		}
		permanent = permanent && bridges.IsPermanent(err)
	}
	err = errors.Join(errs...)
	if permanent {
		err = bridges.Permanent(err)
	}
	return fail(err)
}

// callID returns the Call-ID of the MESSAGE o.
func (a *Adapter) callID(o outboundMessage) string {
	return derive("call-id", o.sourceID)[:32] + "@" + a.domain
}

// contactTarget returns where to send a request for binding b. The
// Request-URI is the contact. A binding whose Flow is set (see
// reachByFlow: RFC 5626 outbound, a contact that cannot be reached as
// written, or a contact that is the symmetric sender itself) goes over the
// flow: over UDP to the address the REGISTER came from, from the listening
// socket, as a NATed user agent needs; over TCP or TLS on the same
// connection while sipgo still holds it. Otherwise, and when that
// connection is gone, the request goes to the contact's host and port
// (RFC 3261 §10, §16.6), over the contact's transport parameter or else
// the transport it registered over.
func (a *Adapter) contactTarget(ua *sipgo.UserAgent, b binding) (target, error) {
	var u sip.Uri
	if err := sip.ParseUri(b.Contact, &u); err != nil {
		return target{}, fmt.Errorf("parse contact: %w", err)
	}
	t := target{uri: u, name: b.Contact}
	if b.Flow && b.Source != "" {
		if !sip.IsReliable(b.Transport) {
			t.transport, t.dest = b.Transport, b.Source
			return t, nil
		}
		if c, err := ua.TransportLayer().GetConnection(b.Transport, b.Source); err == nil {
			_, _ = c.TryClose() // GetConnection took a reference
			t.transport, t.dest = b.Transport, b.Source
			return t, nil
		}
	}
	t.transport = b.Transport
	if p, ok := u.UriParams.Get("transport"); ok {
		t.transport = sip.NetworkToUpper(strings.ToLower(p))
	} else if u.Scheme == "sips" {
		t.transport = "TLS"
	}
	return t, nil
}

// sendTo sends one MESSAGE to t and waits for its final response. It
// returns nil on 2xx; a permanent error on 3xx, 4xx other than 408 and 480,
// 6xx and when the recipient's domain does not resolve; another error on
// 408, 480, 5xx, timeouts and transport errors.
//
// A request too large for UDP (sipgo refuses datagrams beyond 1300 bytes)
// goes over TCP to the same host and port instead, as RFC 3261 §18.1.1 asks;
// if that fails too, the error is permanent: retrying over UDP cannot work.
func (a *Adapter) sendTo(ctx context.Context, client *sipgo.Client, o outboundMessage, t target) error {
	ctx, cancel := context.WithTimeout(ctx, a.sendTimeout)
	defer cancel()
	res, err := client.Do(ctx, a.requestFor(o, t))
	if errors.Is(err, sip.ErrUDPMTUCongestion) {
		t.transport, t.dest = "TCP", ""
		if res, err = client.Do(ctx, a.requestFor(o, t)); err != nil {
			return bridges.Permanent(fmt.Errorf("%s: %d bytes are too many for UDP, and over TCP: %w", t.name, len(o.body), err))
		}
	}
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return bridges.Permanent(fmt.Errorf("no route to %s: %w", t.name, err))
		}
		return fmt.Errorf("%s: %w", t.name, err)
	}
	code := res.StatusCode
	switch {
	case code >= 200 && code < 300:
		a.log.Debug("sip message delivered", "to", t.name, "status", code)
		return nil
	case code == 408 || code == 480 || (code >= 500 && code < 600):
		return fmt.Errorf("%s answered %d %s", t.name, code, res.Reason)
	default:
		return bridges.Permanent(fmt.Errorf("%s answered %d %s", t.name, code, res.Reason))
	}
}

// requestFor builds the MESSAGE o for target t.
func (a *Adapter) requestFor(o outboundMessage, t target) *sip.Request {
	req := a.newMessageRequest(o, t.uri)
	t.address(req)
	return req
}

// address sends req the way t says: through its route, over its transport,
// to its destination.
func (t target) address(req *sip.Request) {
	if t.route != nil {
		req.AppendHeader(&sip.RouteHeader{Address: *t.route.Clone()})
	}
	if t.transport != "" {
		req.SetTransport(t.transport)
	}
	if t.dest != "" {
		req.SetDestination(t.dest)
	}
}

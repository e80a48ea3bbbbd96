package sip

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// maxBindings bounds the contacts of one address of record. Beyond it, the
// bindings refreshed least recently are dropped.
const maxBindings = 10

// registration is what the adapter keeps of one address of record, as JSON
// under the links key "aor:<user>" (the user part, unescaped). The format is
// persistent: a change of it is a new Version, and loadRegistration reads
// every older one.
type registration struct {
	// Version is the format of the record: 0 (absent) for records written
	// before bindings had Flow, whose routing loadRegistration derives from
	// Symmetric (legacyFlow); registrationVersion for those written now.
	Version  int       `json:"version,omitempty"`
	Bindings []binding `json:"bindings"`
}

// registrationVersion is the format storeRegistration writes.
const registrationVersion = 2

// binding is one registered contact of an address of record (RFC 3261
// §10.3).
type binding struct {
	// Contact is the contact URI the user agent registered.
	Contact string `json:"contact"`
	// Expires is when the binding lapses.
	Expires time.Time `json:"expires"`
	// CallID and CSeq identify the REGISTER that last refreshed the
	// binding; an older one may not change it.
	CallID string `json:"call_id"`
	CSeq   uint32 `json:"cseq"`
	// Transport is the transport the REGISTER came over (UDP, TCP or TLS)
	// and Source the address it came from: together, the flow.
	Transport string `json:"transport"`
	Source    string `json:"source"`
	// Flow says requests go over the flow (to Source over Transport,
	// reusing the connection while it stays open) rather than to the
	// contact as written; reachByFlow decides it at REGISTER time.
	Flow bool `json:"flow,omitempty"`
	// Instance and RegID are the +sip.instance and reg-id of an RFC 5626
	// registration: a REGISTER with the same pair replaces the binding,
	// whatever its Contact.
	Instance string `json:"instance,omitempty"`
	RegID    string `json:"reg_id,omitempty"`
	// Symmetric is only read, from records of version 0: it was set for
	// every REGISTER over a connection or with rport, and routed all its
	// contacts to Source. loadRegistration turns it into Flow.
	Symmetric bool `json:"symmetric,omitempty"`
	// UserAgent is the REGISTER's User-Agent header, for the log.
	UserAgent string `json:"user_agent,omitempty"`
	// Updated is when the binding was last refreshed.
	Updated time.Time `json:"updated"`
}

// aorKey is the links key of the registration of user.
func aorKey(user string) string { return "aor:" + user }

// contactRequest is one Contact of a REGISTER.
type contactRequest struct {
	uri     string // normalised: lowercase scheme and host
	expires time.Duration
	// flow says whether and why requests go over the REGISTER's flow.
	flow flowReason
	// instance and regID are the RFC 5626 +sip.instance and reg-id, when
	// flow is flowOutbound.
	instance, regID string
}

// onRegister is the registrar (RFC 3261 §10.3) for the adapter's domain:
// it authenticates the user of the To AOR with digest (401), then adds,
// refreshes, removes or lists their bindings, kept in the links. After a
// REGISTER that leaves bindings, it tells the routing core the user is
// reachable, so that messages waiting for them are sent at once.
func (a *Adapter) onRegister(req *sip.Request, _ netip.Addr, _ *peer) *reply {
	in, r := checkRequest(req)
	if r != nil {
		return r
	}
	now := a.now()
	aor, user, err := aorOf(&req.To().Address)
	if err != nil {
		return newReply(400, "Bad To URI")
	}
	if _, host, _ := (AddressCodec{}).Split(aor); host != a.domain {
		return newReply(403, "Forbidden (Not A Domain Of This Registrar)")
	}
	c, ok := a.credentials(req, "Authorization", "Proxy-Authorization")
	if !ok {
		return a.challenge(req, false, now)
	}
	username, r := a.authenticate(req, c, now)
	if r != nil {
		return r
	}
	if username != user || !a.users[user] {
		return newReply(403, "Forbidden (Credentials Are Not The AOR's)")
	}
	contacts, wildcard, r := a.parseContacts(req)
	if r != nil {
		return r
	}

	host, links, _, _ := a.stack()
	ctx, cancel := context.WithTimeout(a.dispatchCtx, linksTimeout)
	defer cancel()
	unlock := a.aors.Lock(user)
	reg, err := a.loadRegistration(ctx, links, user, now)
	if err == nil {
		reg, r = updateRegistration(reg, req, in, contacts, wildcard, now)
		if r != nil {
			unlock()
			return r
		}
		if len(contacts) > 0 || wildcard {
			err = storeRegistration(ctx, links, user, reg)
		}
	}
	unlock()
	if err != nil {
		a.log.Error("sip registrar storage failed", "aor", aor, "err", err)
		return newReply(500, "Registrar Storage Failure", sip.NewHeader("Retry-After", "10"))
	}
	for _, c := range contacts {
		if c.expires > 0 {
			a.log.Info("sip registered", "aor", aor, "contact", c.uri, "route", c.flow.String(), "source", req.Source())
		}
	}
	if len(reg.Bindings) > 0 {
		host.Reachable(event.Address{Network: event.SIP, ID: aor})
	}
	// No "Supported: outbound" (RFC 5626 §6), although an outbound
	// binding gets its flow: Parley does not answer the keep-alives that
	// option would ask of the user agent (STUN over UDP, the CRLF pong over
	// TCP), and a user agent whose keep-alives go unanswered takes its flow
	// for dead and registers again and again.
	headers := make([]sip.Header, 0, len(reg.Bindings)+1)
	for _, b := range reg.Bindings {
		secs := int64(b.Expires.Sub(now).Round(time.Second) / time.Second)
		headers = append(headers, sip.NewHeader("Contact", "<"+b.Contact+">;expires="+strconv.FormatInt(max(secs, 1), 10)))
	}
	headers = append(headers, sip.NewHeader("Date", now.UTC().Format(sipDate)))
	return newReply(200, "OK", headers...)
}

// sipDate is the format of the Date header (RFC 3261 §20.17, RFC 1123).
const sipDate = "Mon, 02 Jan 2006 15:04:05 GMT"

// parseContacts reads the Contact and Expires headers of a REGISTER. It
// answers 400 when they are malformed, and 423 with Min-Expires when a
// contact asks for less than Config.MinExpires (RFC 3261 §10.3 step 7).
// Longer than Config.MaxExpires is shortened; no expiry at all means the
// maximum.
func (a *Adapter) parseContacts(req *sip.Request) (contacts []contactRequest, wildcard bool, r *reply) {
	defExpires := a.cfg.MaxExpires
	headerExpires := -1
	if h := req.GetHeader("Expires"); h != nil {
		n, ok := parseDeltaSeconds(h.Value())
		if !ok {
			return nil, false, newReply(400, "Bad Expires")
		}
		headerExpires = n
		defExpires = time.Duration(n) * time.Second
	}
	seen := map[string]int{}
	for _, h := range req.GetHeaders("Contact") {
		ch, ok := h.(*sip.ContactHeader)
		if !ok {
			return nil, false, newReply(400, "Bad Contact")
		}
		if ch.Address.Wildcard {
			wildcard = true
			continue
		}
		u := ch.Address
		if u.Scheme != "sip" && u.Scheme != "sips" {
			return nil, false, newReply(400, "Bad Contact URI (Want sip: or sips:)")
		}
		host, err := canonicalHost(u.Host)
		if err != nil || u.Port < 0 || u.Port > 65535 {
			return nil, false, newReply(400, "Bad Contact URI")
		}
		u.Host = host
		expires := defExpires
		if v, ok := ch.Params.Get("expires"); ok {
			n, ok := parseDeltaSeconds(v)
			if !ok {
				return nil, false, newReply(400, "Bad Contact Expires")
			}
			expires = time.Duration(n) * time.Second
		}
		c := contactRequest{uri: u.String(), expires: expires}
		in := flowInputOf(req, ch)
		in.contact = u
		c.flow = reachByFlow(in)
		if c.flow == flowOutbound {
			c.instance, c.regID = in.instance, in.regID
		}
		if i, dup := seen[c.uri]; dup {
			contacts[i] = c
			continue
		}
		seen[c.uri] = len(contacts)
		contacts = append(contacts, c)
	}
	if wildcard && (len(contacts) > 0 || headerExpires != 0) {
		return nil, false, newReply(400, "Invalid Wildcard Contact")
	}
	for i, c := range contacts {
		switch {
		case c.expires == 0:
		case c.expires < a.cfg.MinExpires:
			return nil, false, newReply(423, "Interval Too Brief",
				sip.NewHeader("Min-Expires", strconv.FormatInt(int64(a.cfg.MinExpires/time.Second), 10)))
		case c.expires > a.cfg.MaxExpires:
			contacts[i].expires = a.cfg.MaxExpires
		}
	}
	return contacts, wildcard, nil
}

// parseDeltaSeconds parses an RFC 3261 delta-seconds value; values beyond
// 2³²-1 are taken as 2³²-1 (§25.1).
func parseDeltaSeconds(s string) (int, bool) {
	s = strings.TrimSpace(s)
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0xffffffff, true
	}
	return int(n), true
}

// updateRegistration applies a REGISTER to reg (RFC 3261 §10.3 steps 6-8):
// a binding is changed only by a REGISTER of another Call-ID or of a higher
// CSeq; otherwise the request fails with 400 and nothing changes. A binding
// is the same when its Contact is, or, for RFC 5626 outbound, when its
// +sip.instance and reg-id are (§6: a new flow replaces the old one).
func updateRegistration(reg registration, req *sip.Request, in request, contacts []contactRequest, wildcard bool, now time.Time) (registration, *reply) {
	stale := func(b binding) bool { return b.CallID == in.callID && in.cseq <= b.CSeq }
	if wildcard {
		for _, b := range reg.Bindings {
			if stale(b) {
				return reg, newReply(400, "Out-of-Order CSeq")
			}
		}
		return registration{}, nil
	}
	out := append([]binding(nil), reg.Bindings...)
	transport := sip.NetworkToUpper(req.Transport())
	userAgent := ""
	if h := req.GetHeader("User-Agent"); h != nil {
		userAgent = h.Value()
	}
	for _, c := range contacts {
		i := -1
		for j, b := range out {
			if b.Contact == c.uri || c.regID != "" && b.Instance == c.instance && b.RegID == c.regID {
				i = j
				break
			}
		}
		if i >= 0 && stale(out[i]) {
			return reg, newReply(400, "Out-of-Order CSeq")
		}
		if c.expires == 0 {
			if i >= 0 {
				out = append(out[:i], out[i+1:]...)
			}
			continue
		}
		b := binding{
			Contact:   c.uri,
			Expires:   now.Add(c.expires),
			CallID:    in.callID,
			CSeq:      in.cseq,
			Transport: transport,
			Source:    req.Source(),
			Flow:      c.flow != flowNone,
			Instance:  c.instance,
			RegID:     c.regID,
			UserAgent: userAgent,
			Updated:   now,
		}
		if i >= 0 {
			out[i] = b
		} else {
			out = append(out, b)
		}
	}
	if len(out) > maxBindings {
		sort.SliceStable(out, func(i, j int) bool { return out[i].Updated.After(out[j].Updated) })
		out = out[:maxBindings]
	}
	return registration{Version: registrationVersion, Bindings: out}, nil
}

// loadRegistration reads the registration of user and drops its lapsed
// bindings. A record that does not decode is logged and taken as empty: the
// user agents register again.
func (a *Adapter) loadRegistration(ctx context.Context, links bridges.Links, user string, now time.Time) (registration, error) {
	v, ok, err := links.Get(ctx, aorKey(user))
	if err != nil {
		return registration{}, fmt.Errorf("read link %s: %w", aorKey(user), err)
	}
	var reg registration
	if !ok {
		return reg, nil
	}
	if err := json.Unmarshal([]byte(v), &reg); err != nil {
		a.log.Warn("sip registration record unreadable; dropped", "key", aorKey(user), "err", err)
		return registration{}, nil
	}
	live := reg.Bindings[:0]
	for _, b := range reg.Bindings {
		if reg.Version < registrationVersion {
			b.Flow, b.Symmetric = legacyFlow(b), false
		}
		if b.Expires.After(now) {
			live = append(live, b)
		}
	}
	reg.Bindings = live
	reg.Version = registrationVersion
	return reg, nil
}

// storeRegistration writes reg as the registration of user, or deletes it
// when it has no binding.
func storeRegistration(ctx context.Context, links bridges.Links, user string, reg registration) error {
	key := aorKey(user)
	if len(reg.Bindings) == 0 {
		if err := links.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete link %s: %w", key, err)
		}
		return nil
	}
	reg.Version = registrationVersion
	v, err := json.Marshal(reg)
	if err != nil {
		return fmt.Errorf("encode link %s: %w", key, err)
	}
	if err := links.Put(ctx, key, string(v)); err != nil {
		return fmt.Errorf("write link %s: %w", key, err)
	}
	return nil
}

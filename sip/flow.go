package sip

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Where requests for a registered contact (MESSAGE) or a watcher (NOTIFY)
// go. RFC 3261 §10.3 and §16.6 deliver to the Contact URI as it was
// registered: that is what lets one user register several devices, or a
// device register on behalf of another. The flow, the transport and source
// address of the REGISTER (or SUBSCRIBE) that created the binding, is used
// instead only on evidence that the Contact cannot work as written or that
// the user agent asked for its flow:
//
//   - flowOutbound: RFC 5626 outbound. The Contact has +sip.instance and
//     reg-id and Parley is the first hop (a single Via, §6: through a proxy
//     reg-id counts only with "ob" in the Path, and Parley does not route
//     by Path), or the Contact URI has the "ob" parameter (the user agent
//     asks for requests on its flow; RFC 5626 defines it for dialog-forming
//     requests, and pjsip puts it in its REGISTER Contact too).
//   - flowUnreachable: the Contact's host is an IP address in a range that
//     does not route across networks (loopback, RFC 1918 and RFC 4193
//     private, RFC 6598 shared, link-local, unspecified) and is not the
//     address the request came from: the user agent is behind NAT and wrote
//     its own address, which means nothing here. A contact address equal to
//     the source (a phone on Parley's own LAN, or on loopback) is reachable
//     as written. A host name is never taken as unreachable: resolving it
//     here would only say whether Parley's resolver knows it now, and a
//     name is the user agent's explicit choice.
//   - flowSelf: the Contact is the sender itself (its host, and for UDP
//     its port, are the top Via's sent-by) and the sender said it receives
//     on the socket it sends from: a connection (TCP, TLS; the source port
//     of a connection is ephemeral, so only the host is compared) or rport
//     over UDP (RFC 3581). The flow then reaches the same user agent, and
//     also crosses a NAT that the Contact does not show (a phone set to a
//     static public address behind a port-translating router).
//
// rport alone is not such evidence: it asks for responses to the source
// port (RFC 3581) and says nothing of other Contacts in the same REGISTER.
// A REGISTER from a third port that binds two contacts (registration on
// behalf of other devices) reaches both contacts.
//
// Known limit: a device on a private network that registers another
// device's private address from a different address of the same network
// is taken as NATed (flowUnreachable) when Parley is not on that network's
// side of a NAT it cannot see; such a device registers itself, or uses a
// host name.
type flowReason uint8

const (
	flowNone flowReason = iota // the Contact as written
	flowOutbound
	flowUnreachable
	flowSelf
)

func (r flowReason) String() string {
	switch r {
	case flowOutbound:
		return "outbound"
	case flowUnreachable:
		return "contact unreachable as written"
	case flowSelf:
		return "contact is the sender"
	default:
		return "contact"
	}
}

// flowInput is what decides between a Contact and the flow: the Contact
// and the request that carried it.
type flowInput struct {
	contact sip.Uri
	// instance and regID are the +sip.instance and reg-id Contact header
	// parameters (RFC 5626 §4.2).
	instance, regID string
	// transport (UDP, TCP, TLS...) and source (ip:port) are where the
	// request came from.
	transport, source string
	// via is the top Via; vias the number of Via values.
	via  *sip.ViaHeader
	vias int
}

// flowInputOf returns the flowInput of Contact c of req.
func flowInputOf(req *sip.Request, c *sip.ContactHeader) flowInput {
	in := flowInput{
		contact:   c.Address,
		transport: sip.NetworkToUpper(req.Transport()),
		source:    req.Source(),
		via:       req.Via(),
		vias:      len(req.GetHeaders("Via")),
	}
	in.instance, in.regID = outboundParams(c.Params)
	return in
}

// outboundParams returns the +sip.instance and reg-id parameters of a
// Contact (RFC 5626 §4.1, §4.2), names compared without case as RFC 3261
// §7.3.1 asks; reg-id without +sip.instance is ignored (§6).
func outboundParams(params sip.HeaderParams) (instance, regID string) {
	for _, kv := range params {
		switch {
		case strings.EqualFold(kv.K, "+sip.instance"):
			instance = kv.V
		case strings.EqualFold(kv.K, "reg-id"):
			regID = kv.V
		}
	}
	if instance == "" {
		regID = ""
	}
	return instance, regID
}

// reachByFlow decides whether requests for in.contact go over the flow
// (see flowReason), and why; flowNone means the Contact as written.
func reachByFlow(in flowInput) flowReason {
	if in.source == "" {
		return flowNone
	}
	if in.regID != "" && in.vias <= 1 {
		return flowOutbound
	}
	if in.contact.UriParams != nil && in.contact.UriParams.Has("ob") {
		return flowOutbound
	}
	src, err := netip.ParseAddrPort(in.source)
	if err != nil {
		return flowNone
	}
	host := strings.TrimSuffix(strings.TrimPrefix(in.contact.Host, "["), "]")
	ip, err := netip.ParseAddr(host)
	if err == nil {
		ip = ip.Unmap()
		if !routable(ip) && ip != src.Addr().Unmap() {
			return flowUnreachable
		}
	}
	if in.via == nil || !strings.EqualFold(in.via.Host, in.contact.Host) && !sameIP(in.via.Host, host) {
		return flowNone
	}
	if sip.IsReliable(in.transport) {
		return flowSelf
	}
	if in.via.Params.Has("rport") && defaultPort(in.via.Port, in.transport) == defaultPort(in.contact.Port, in.transport) {
		return flowSelf
	}
	return flowNone
}

// shared is the RFC 6598 shared address space of carrier-grade NAT.
var shared = netip.MustParsePrefix("100.64.0.0/10")

// routable says whether ip may be reached from another network: not
// loopback, private (RFC 1918, RFC 4193), shared (RFC 6598), link-local or
// unspecified.
func routable(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsLoopback() && !ip.IsPrivate() && !shared.Contains(ip) &&
		!ip.IsLinkLocalUnicast() && !ip.IsUnspecified()
}

// sameIP says whether a and b are the same IP address.
func sameIP(a, b string) bool {
	x, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"))
	if err != nil {
		return false
	}
	y, err := netip.ParseAddr(b)
	return err == nil && x.Unmap() == y.Unmap()
}

// defaultPort is port, or the default port of transport when 0 (RFC 3261
// §19.1.2).
func defaultPort(port int, transport string) int {
	if port != 0 {
		return port
	}
	if transport == "TLS" {
		return 5061
	}
	return 5060
}

// legacyFlow is the flow decision for a binding stored before the
// registration record had a version (see registration.Version): those kept
// Symmetric, set for every REGISTER over a connection or with rport, and
// not the Via. They go over the flow when their Contact is unreachable as
// written, or when they were symmetric and their Contact is on the source's
// host; otherwise (another host registered them) to the Contact.
func legacyFlow(b binding) bool {
	var u sip.Uri
	if b.Source == "" || sip.ParseUri(b.Contact, &u) != nil {
		return false
	}
	r := reachByFlow(flowInput{contact: u, transport: b.Transport, source: b.Source})
	if r != flowNone {
		return true
	}
	src, err := netip.ParseAddrPort(b.Source)
	return err == nil && b.Symmetric && sameIP(u.Host, src.Addr().Unmap().String())
}

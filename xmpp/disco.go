package xmpp

import (
	"encoding/xml"

	"mellium.im/xmpp/jid"
)

// Service discovery namespaces (XEP-0030).
const (
	nsDiscoInfo  = "http://jabber.org/protocol/disco#info"
	nsDiscoItems = "http://jabber.org/protocol/disco#items"
)

// identity is an XEP-0030 identity.
type identity struct {
	Category, Type, Name string
}

// discoInfo returns the disco#info the component gives for addr, a JID under
// its domain: the gateway itself for the bare domain, a ghost user for any
// other JID. Ghosts are not checked against the identity map: the component
// does not know who exists until a message is routed.
func (a *Adapter) discoInfo(addr jid.JID) (identity, []string) {
	if addr.Localpart() == "" && addr.Resourcepart() == "" {
		return identity{Category: "gateway", Type: a.cfg.gatewayType(), Name: "Parley"},
			[]string{nsDiscoInfo, nsDiscoItems, nsReceipts}
	}
	return identity{Category: "client", Type: "pc"}, []string{nsDiscoInfo, nsReceipts}
}

// discoInfoQuery returns the <query/> of a disco#info result.
func discoInfoQuery(id identity, features []string) xml.TokenReader {
	attrs := []xml.Attr{attr("category", id.Category), attr("type", id.Type)}
	if id.Name != "" {
		attrs = append(attrs, attr("name", id.Name))
	}
	// Children without a namespace inherit the query's.
	children := []xml.TokenReader{element(xml.Name{Local: "identity"}, attrs)}
	for _, f := range features {
		children = append(children, element(xml.Name{Local: "feature"}, []xml.Attr{attr("var", f)}))
	}
	return element(xml.Name{Space: nsDiscoInfo, Local: "query"}, nil, children...)
}

// discoItemsQuery returns the <query/> of an empty disco#items result: the
// component lists no items.
func discoItemsQuery() xml.TokenReader {
	return element(xml.Name{Space: nsDiscoItems, Local: "query"}, nil)
}

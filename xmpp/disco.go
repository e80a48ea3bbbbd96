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
// its domain: the gateway itself for the bare domain, which is also a MUC
// service (see mucservice.go); a room for a served room; a ghost user for
// any other JID. Ghosts are not checked against the identity map: the
// component does not know who exists until a message is routed.
func (a *Adapter) discoInfo(addr jid.JID) ([]identity, []string) {
	if addr.Localpart() == "" && addr.Resourcepart() == "" {
		return []identity{
				{Category: "gateway", Type: a.cfg.gatewayType(), Name: "Parley"},
				{Category: "conference", Type: "text", Name: "Matrix rooms"},
			},
			[]string{nsDiscoInfo, nsDiscoItems, nsMUC, nsReceipts}
	}
	if _, alias, ok := a.servedRoom(addr.String()); ok && addr.Resourcepart() == "" {
		return []identity{{Category: "conference", Type: "text", Name: alias}},
			[]string{nsDiscoInfo, nsMUC, nsSID, featureMUCOpen, featureMUCUnmoderated, featureMUCSemiAnonymous, featureMUCTemporary}
	}
	return []identity{{Category: "client", Type: "pc"}}, []string{nsDiscoInfo, nsReceipts}
}

// discoInfoQuery returns the <query/> of a disco#info result.
func discoInfoQuery(ids []identity, features []string) xml.TokenReader {
	// Children without a namespace inherit the query's.
	var children []xml.TokenReader
	for _, id := range ids {
		attrs := []xml.Attr{attr("category", id.Category), attr("type", id.Type)}
		if id.Name != "" {
			attrs = append(attrs, attr("name", id.Name))
		}
		children = append(children, element(xml.Name{Local: "identity"}, attrs))
	}
	for _, f := range features {
		children = append(children, element(xml.Name{Local: "feature"}, []xml.Attr{attr("var", f)}))
	}
	return element(xml.Name{Space: nsDiscoInfo, Local: "query"}, nil, children...)
}

// discoItem is an XEP-0030 item.
type discoItem struct {
	JID, Name string
}

// discoItems returns the items the component lists for addr: for the bare
// domain, the rooms it serves with a portal open (see mucservice.go);
// nothing for any other JID.
func (a *Adapter) discoItems(addr jid.JID) []discoItem {
	if addr.Localpart() != "" || addr.Resourcepart() != "" {
		return nil
	}
	return a.served.openRooms()
}

// discoItemsQuery returns the <query/> of a disco#items result with items.
func discoItemsQuery(items ...discoItem) xml.TokenReader {
	var children []xml.TokenReader
	for _, it := range items {
		attrs := []xml.Attr{attr("jid", it.JID)}
		if it.Name != "" {
			attrs = append(attrs, attr("name", it.Name))
		}
		children = append(children, element(xml.Name{Local: "item"}, attrs))
	}
	return element(xml.Name{Space: nsDiscoItems, Local: "query"}, nil, children...)
}

package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
	"github.com/parleygw/parley/internal/escape"
	"github.com/parleygw/parley/mapping"
)

// Portals on demand. A room alias in the appservice's namespace names an
// XMPP multi-user chat:
//
//	#_xmpp_{room}_{service}:server_name
//
// with {room} and {service} the two halves of the MUC's bare JID, escaped
// as ghosts' addresses are (internal/escape: every byte but a-z, 0-9, '.'
// and '-' becomes =XX), so that '_' separates them and every alias names
// one MUC: #_xmpp_team_conference.example.org:example.org is
// team@conference.example.org. The registration declares the namespace
// exclusive.
//
// When a user joins such an alias that does not exist yet, the homeserver
// asks the appservice about it (GET /_matrix/app/v1/rooms/{roomAlias}).
// The policy's MUC services are checked (bridges.PortalHost.MayOpenPortal);
// refused, the answer is 404 and the homeserver tells the user the alias
// does not exist, and the reason is logged. Allowed, the bot creates a
// public room with that alias, named after the MUC, and the answer is 200,
// so the user's join goes on. The homeserver does not say who asked, so
// the portal opens when the first user the policy lets open portals joins
// the room (bridges.PortalHost.OpenPortal): from then on the room is a
// portal room under its room ID, and the XMPP side joins the MUC. Anyone
// else who joins before is told, by a notice from the bot, why the room is
// not bridged yet. The MUC a room was created for is kept in Links
// ("ondemand:"+room ID → MUC JID) until then.

// mucAliasPrefix starts the localpart of the aliases that name a MUC.
const mucAliasPrefix = "_xmpp_"

func onDemandKey(room id.RoomID) string { return "ondemand:" + string(room) }

// parseMUCAlias returns the bare JID of the MUC that alias names, on the
// homeserver server. It returns false for an alias of another form or
// server, and for halves that are not canonical escapes.
func parseMUCAlias(alias, server string) (string, bool) {
	rest, ok := strings.CutPrefix(alias, "#"+mucAliasPrefix)
	if !ok {
		return "", false
	}
	local, srv, ok := strings.Cut(rest, ":")
	if !ok || srv != server {
		return "", false
	}
	room, service, ok := strings.Cut(local, "_")
	if !ok || room == "" || service == "" {
		return "", false
	}
	r, ok1 := escape.Decode(room)
	s, ok2 := escape.Decode(service)
	if !ok1 || !ok2 || strings.ContainsAny(r, "@/ \t\r\n") || strings.ContainsAny(s, "@/") {
		return "", false
	}
	muc := r + "@" + s
	if mapping.CheckRoom(event.Address{Network: event.XMPP, ID: muc}) != nil {
		return "", false
	}
	return muc, true
}

// mucAlias returns the alias on server that names the MUC muc (a bare
// JID), the inverse of parseMUCAlias.
func mucAlias(muc, server string) string {
	room, service, _ := strings.Cut(muc, "@")
	return "#" + mucAliasPrefix + escape.Encode(room) + "_" + escape.Encode(service) + ":" + server
}

// mucAliasNamespace is the registration's regular expression of the
// aliases that name MUCs.
func mucAliasNamespace(server string) string {
	return "^" + regexp.QuoteMeta("#"+mucAliasPrefix) + ".*:" + regexp.QuoteMeta(server) + "$"
}

// getRoom handles GET /_matrix/app/v1/rooms/{roomAlias}: an alias that
// names a MUC the policy lets portals reach gets a room (see above);
// anything else does not exist.
func (a *Adapter) getRoom(w http.ResponseWriter, r *http.Request) {
	alias := r.PathValue("alias")
	muc, ok := parseMUCAlias(alias, a.cfg.ServerName)
	if !ok {
		writeError(w, http.StatusNotFound, "M_NOT_FOUND", "no such room alias")
		return
	}
	host, links := a.started()
	ph, ok := host.(bridges.PortalHost)
	if !ok {
		writeError(w, http.StatusNotFound, "M_NOT_FOUND", "no such room alias")
		return
	}
	matrixRoom := event.Address{Network: event.Matrix, ID: alias}
	xmppRoom := event.Address{Network: event.XMPP, ID: muc}
	if err := ph.MayOpenPortal(event.Address{}, matrixRoom, xmppRoom); err != nil {
		a.log.Info("portal on demand refused", "alias", alias, "muc", muc, "reason", err)
		writeError(w, http.StatusNotFound, "M_NOT_FOUND", "no such room alias: "+err.Error())
		return
	}
	// The homeserver may give up waiting; what is begun is finished.
	ctx, done := context.WithTimeout(context.WithoutCancel(r.Context()), 2*requestTimeout)
	defer done()
	unlock := a.pairs.Lock("ondemand|" + alias)
	defer unlock()
	cctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	localpart := strings.TrimSuffix(strings.TrimPrefix(alias, "#"), ":"+a.cfg.ServerName)
	resp, err := a.client(a.bot).CreateRoom(cctx, &mautrix.ReqCreateRoom{
		Visibility:    "private",
		RoomAliasName: localpart,
		Preset:        "public_chat",
		Name:          muc,
		Topic:         "Bridged with the XMPP group chat " + muc,
	})
	var room id.RoomID
	switch {
	case errors.Is(err, mautrix.MRoomInUse):
		// Created by an earlier query whose answer, or whose link, was
		// lost: it exists, and waits for its portal unless it has one.
		found, rerr := a.client(a.bot).ResolveAlias(cctx, id.RoomAlias(alias))
		if rerr != nil {
			a.log.Error("the room of a portal on demand exists but cannot be resolved", "alias", alias, "err", rerr)
			writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "could not find the room")
			return
		}
		if _, isPortal := a.portalOf(found.RoomID); isPortal {
			writeEmpty(w)
			return
		}
		room = found.RoomID
	case err != nil:
		a.log.Error("could not create the room of a portal on demand", "alias", alias, "muc", muc, "err", err)
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "could not create the room")
		return
	default:
		room = resp.RoomID
	}
	if err := links.Put(ctx, onDemandKey(room), muc); err != nil {
		a.log.Error("could not store the room of a portal on demand", "alias", alias, "room_id", room.String(), "err", err)
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "storage error")
		return
	}
	a.portals.mu.Lock()
	a.portals.botIn[room] = true
	a.portals.mu.Unlock()
	a.log.Info("room created for a portal on demand; it opens when someone allowed joins",
		"alias", alias, "room_id", room.String(), "muc", muc)
	writeEmpty(w)
}

// onDemandOf returns the MUC that room was created for, when it waits for
// someone allowed to open its portal.
func (a *Adapter) onDemandOf(ctx context.Context, room id.RoomID) (string, bool, error) {
	_, links := a.started()
	muc, ok, err := links.Get(ctx, onDemandKey(room))
	if err != nil {
		return "", false, fmt.Errorf("read the portal on demand of %s: %w", room, err)
	}
	return muc, ok, nil
}

// handleOnDemandMember acts on a membership change in a room created for a
// portal on demand that is not open yet: a real user's join opens the
// portal when the policy lets them (and is then handled as in any portal
// room); otherwise the bot tells them why the room is not bridged.
func (a *Adapter) handleOnDemandMember(ctx context.Context, evt *mevent.Event, muc string, target id.UserID, content *mevent.MemberEventContent) error {
	if content.Membership != mevent.MembershipJoin || a.owns(target) || evt.Sender != target {
		return nil
	}
	host, links := a.started()
	ph, ok := host.(bridges.PortalHost)
	if !ok {
		return nil
	}
	room := evt.RoomID
	err := ph.OpenPortal(ctx, event.Address{Network: event.Matrix, ID: target.String()},
		event.Address{Network: event.Matrix, ID: room.String()}, event.Address{Network: event.XMPP, ID: muc})
	switch {
	case err == nil:
		if err := links.Delete(ctx, onDemandKey(room)); err != nil {
			a.log.Warn("could not forget the pending portal on demand", "room_id", room.String(), "err", err)
		}
		a.log.Info("portal on demand opened", "room_id", room.String(), "muc", muc, "by", target.String())
		return a.handlePortalMember(ctx, evt, room.String(), target, content)
	case errors.Is(err, bridges.ErrRefused), errors.Is(err, bridges.ErrInPortal):
		a.log.Info("portal on demand not opened", "room_id", room.String(), "muc", muc, "user", target.String(), "reason", err)
		return a.notify(ctx, room, a.bot, evt.ID, onDemandRefusedText(target, muc, err))
	default:
		return fmt.Errorf("open the portal of %s to %s: %w", room, muc, err)
	}
}

// onDemandRefusedText tells user why the room is not bridged to muc.
func onDemandRefusedText(user id.UserID, muc string, reason error) string {
	why := "you may not open portals to other networks"
	switch {
	case errors.Is(reason, bridges.ErrInPortal):
		why = "it is bridged with another room already"
	case errors.Is(reason, mapping.ErrNotAllowed) && strings.Contains(reason.Error(), "MUC service"):
		why = "the gateway may not reach its service"
	}
	return user.String() + ": this room is not bridged with the XMPP group chat " + muc + ": " + why +
		". It is bridged once someone allowed to open portals joins it."
}

package matrix

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
	"github.com/parleygw/parley/event"
)

// Portal rooms. A portal joins a Matrix room with a group chat of another
// network (the YAML's mapping.portals). The YAML names the room by its ID
// (!id:server) or by an alias (#name:server), and the core addresses the
// room by that name: To of a post dispatched from the room, To of a post
// for it (bridges.RoomHost).
//
// The bot joins every portal room once the homeserver accepts the as_token
// (joinPortals, from the connect loop): its membership is what makes the
// homeserver push the room's events to Parley. A room the bot may not join
// (invite-only, the bot not invited) is warned of once, with what the admin
// must do, and tried again when the bot is invited to it (an invite in a
// transaction), on the next post for it, and every portalRetry. A ghost
// joins a room before its first post there: by itself when the room lets
// it, otherwise invited by the bot.
//
// What the adapter knows of its portal rooms is in memory (portalState);
// an alias's room ID is also kept in Links ("portal:"+alias → room ID), so
// that after a restart the events the homeserver pushes before the alias is
// resolved again are recognised.

// portalRetry is how often the connect loop tries again to join the portal
// rooms the bot is not in.
const portalRetry = 5 * time.Minute

// errPortalClosed marks a portal room the bot or a ghost could not get
// into. It is not permanent: the admin may open the room or invite the bot.
var errPortalClosed = errors.New("the room does not let the gateway in")

// portalState is what the adapter knows of its portal rooms. Its maps are
// keyed by room ID, but for aliases (the room's name in the YAML).
type portalState struct {
	mu      sync.Mutex
	aliases map[string]id.RoomID // alias → room ID
	via     map[id.RoomID][]string
	botIn   map[id.RoomID]bool
	refused map[id.RoomID]bool // the bot was refused, and it was said
	unknown map[string]bool    // aliases that resolve to no room, and it was said
	ghosts  map[id.RoomID]map[id.UserID]bool
	names   map[id.RoomID]map[id.UserID]string // members' display names, "" when they have none
}

func newPortalState() *portalState {
	return &portalState{
		aliases: map[string]id.RoomID{},
		via:     map[id.RoomID][]string{},
		botIn:   map[id.RoomID]bool{},
		refused: map[id.RoomID]bool{},
		unknown: map[string]bool{},
		ghosts:  map[id.RoomID]map[id.UserID]bool{},
		names:   map[id.RoomID]map[id.UserID]string{},
	}
}

func aliasKey(alias string) string { return "portal:" + alias }

// portalKey is the conversation key (mustLook, settle) of a portal room.
func portalKey(room id.RoomID) string { return "portal:" + string(room) }

// isAlias reports whether name is a room alias rather than a room ID.
func isAlias(name string) bool { return strings.HasPrefix(name, "#") }

// portalNames returns the portal rooms, as the YAML names them: none when
// the host carries no rooms.
func (a *Adapter) portalNames() []string {
	host, _ := a.started()
	rh, ok := host.(bridges.RoomHost)
	if !ok {
		return nil
	}
	var out []string
	for _, r := range rh.Rooms(event.Matrix) {
		if r.Network == event.Matrix && (isAlias(r.ID) || strings.HasPrefix(r.ID, "!")) {
			out = append(out, r.ID)
		}
	}
	return out
}

// isPortal reports whether name is a portal room's name.
func (a *Adapter) isPortal(name string) bool {
	for _, n := range a.portalNames() {
		if n == name {
			return true
		}
	}
	return false
}

// portalOf returns the name of the portal room whose ID is room, if it is
// one. It does no I/O: an alias counts once it is resolved.
func (a *Adapter) portalOf(room id.RoomID) (string, bool) {
	names := a.portalNames()
	a.portals.mu.Lock()
	defer a.portals.mu.Unlock()
	for _, n := range names {
		if n == string(room) || (isAlias(n) && a.portals.aliases[n] == room) {
			return n, true
		}
	}
	return "", false
}

// loadPortals reads the aliases resolved by earlier runs from Links.
func (a *Adapter) loadPortals(ctx context.Context, links bridges.Links) {
	known, err := links.List(ctx, "portal:")
	if err != nil {
		a.log.Warn("could not read the portal rooms' ids", "err", err)
		return
	}
	a.portals.mu.Lock()
	defer a.portals.mu.Unlock()
	for key, room := range known {
		a.portals.aliases[strings.TrimPrefix(key, "portal:")] = id.RoomID(room)
	}
}

// resolvePortal returns the room ID of the portal room name and the servers
// to join it through. An alias is resolved (GET /directory/room/{alias})
// the first time in a run, or again when again is set; its room ID is
// remembered. When the homeserver cannot answer, a room ID known from an
// earlier run is used.
func (a *Adapter) resolvePortal(ctx context.Context, name string, again bool) (id.RoomID, []string, error) {
	if !isAlias(name) {
		room := id.RoomID(name)
		var via []string
		if _, server, ok := strings.Cut(name, ":"); ok && server != "" {
			via = []string{server}
		}
		return room, via, nil
	}
	a.portals.mu.Lock()
	room, ok := a.portals.aliases[name]
	via := a.portals.via[room]
	a.portals.mu.Unlock()
	if ok && via != nil && !again {
		return room, via, nil
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := a.client(a.bot).ResolveAlias(rctx, id.RoomAlias(name))
	if err != nil {
		if ok && (isTransient(err) || isTokenError(err)) {
			return room, nil, nil // the room ID known from before is good enough
		}
		return "", nil, fmt.Errorf("resolve room alias %s: %w", name, err)
	}
	if resp.RoomID == "" {
		return "", nil, fmt.Errorf("resolve room alias %s: no room ID in the answer", name)
	}
	via = resp.Servers
	if via == nil {
		via = []string{}
	}
	a.portals.mu.Lock()
	a.portals.aliases[name] = resp.RoomID
	a.portals.via[resp.RoomID] = via
	a.portals.mu.Unlock()
	if room != resp.RoomID {
		_, links := a.started()
		if err := links.Put(ctx, aliasKey(name), resp.RoomID.String()); err != nil {
			a.log.Warn("could not store the portal room's id", "room", name, "room_id", resp.RoomID.String(), "err", err)
		}
		a.log.Info("portal room alias resolved", "room", name, "room_id", resp.RoomID.String())
	}
	return resp.RoomID, via, nil
}

// joinPortals has the bot join every portal room it is not in. It reports
// whether some room is still left out; each is logged.
func (a *Adapter) joinPortals(ctx context.Context) (pending bool) {
	for _, name := range a.portalNames() {
		if ctx.Err() != nil {
			return true
		}
		if _, err := a.joinBot(ctx, name); err != nil {
			pending = true
			if !errors.Is(err, errPortalClosed) {
				a.log.Warn("portal room not joined; trying again later", "room", name, "err", err)
			}
		}
	}
	return pending
}

// joinBot has the bot join the portal room name, unless it is in already,
// and returns the room's ID. A refusal gives an error wrapping
// errPortalClosed, and the first one in a row is logged as a warning that
// says what the admin must do. A join wakes the posts that wait for the
// room (Host.Reachable).
func (a *Adapter) joinBot(ctx context.Context, name string) (id.RoomID, error) {
	unlock := a.pairs.Lock("portal|" + name)
	defer unlock()
	room, via, err := a.resolvePortal(ctx, name, false)
	if err != nil {
		if isTransient(err) || isTokenError(err) {
			return "", a.classify(err)
		}
		a.portals.mu.Lock()
		said := a.portals.unknown[name]
		a.portals.unknown[name] = true
		a.portals.mu.Unlock()
		if !said {
			a.log.Warn("portal room alias unknown: create the room and its alias, or fix mapping.portals; the gateway tries again later",
				"room", name, "err", err)
		}
		return "", fmt.Errorf("%w: %w", errPortalClosed, err)
	}
	a.portals.mu.Lock()
	delete(a.portals.unknown, name)
	in := a.portals.botIn[room]
	a.portals.mu.Unlock()
	if in {
		return room, nil
	}
	jctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err = a.client(a.bot).JoinRoom(jctx, room.String(), &mautrix.ReqJoinRoom{Via: via})
	if err != nil {
		if isTransient(err) || isTokenError(err) {
			return "", a.classify(fmt.Errorf("join portal room %s as %s: %w", name, a.bot, err))
		}
		a.portals.mu.Lock()
		said := a.portals.refused[room]
		a.portals.refused[room] = true
		a.portals.mu.Unlock()
		if !said {
			a.log.Warn("the bot may not join the portal room: make the room public, or invite the bot to it; "+
				"the gateway joins when invited, and tries again on the next post for it",
				"room", name, "room_id", room.String(), "bot", a.bot.String(), "err", err)
		}
		return "", fmt.Errorf("join portal room %s as %s: %w: %w", name, a.bot, errPortalClosed, err)
	}
	a.portals.mu.Lock()
	a.portals.botIn[room] = true
	delete(a.portals.refused, room)
	a.portals.mu.Unlock()
	a.log.Info("joined the portal room", "room", name, "room_id", room.String(), "bot", a.bot.String())
	if host, _ := a.started(); host != nil {
		host.Reachable(event.Address{Network: event.Matrix, ID: name})
	}
	return room, nil
}

// ensureGhostIn has ghost join the portal room name (room, through via),
// unless it did already: by itself, and when the room refuses, invited by
// the bot (which joins first) and then again by itself.
func (a *Adapter) ensureGhostIn(ctx context.Context, name string, room id.RoomID, via []string, ghost id.UserID) error {
	if a.ghostIn(room, ghost) {
		return nil
	}
	jctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	cli := a.client(ghost)
	_, err := cli.JoinRoom(jctx, room.String(), &mautrix.ReqJoinRoom{Via: via})
	if err != nil {
		if isTransient(err) || isTokenError(err) {
			return a.classify(fmt.Errorf("join portal room %s as %s: %w", name, ghost, err))
		}
		// Invite-only: the bot lets the ghost in.
		if _, err := a.joinBot(ctx, name); err != nil {
			return err
		}
		_, ierr := a.client(a.bot).InviteUser(jctx, room, &mautrix.ReqInviteUser{UserID: ghost})
		if ierr != nil && (isTransient(ierr) || isTokenError(ierr)) {
			return a.classify(fmt.Errorf("invite %s to portal room %s: %w", ghost, name, ierr))
		}
		// A refused invite may mean the ghost is invited already: the
		// join tells.
		if _, err = cli.JoinRoom(jctx, room.String(), &mautrix.ReqJoinRoom{Via: via}); err != nil {
			if isTransient(err) || isTokenError(err) {
				return a.classify(fmt.Errorf("join portal room %s as %s: %w", name, ghost, err))
			}
			if ierr != nil {
				a.log.Warn("the bot may not invite ghosts to the portal room: make the room public, or let the bot invite",
					"room", name, "bot", a.bot.String(), "ghost", ghost.String(), "err", ierr)
			}
			return fmt.Errorf("join portal room %s as %s: %w: %w", name, ghost, errPortalClosed, err)
		}
	}
	a.setGhostIn(room, ghost, true)
	return nil
}

func (a *Adapter) ghostIn(room id.RoomID, ghost id.UserID) bool {
	a.portals.mu.Lock()
	defer a.portals.mu.Unlock()
	return a.portals.ghosts[room][ghost]
}

func (a *Adapter) setGhostIn(room id.RoomID, ghost id.UserID, in bool) {
	a.portals.mu.Lock()
	defer a.portals.mu.Unlock()
	if !in {
		delete(a.portals.ghosts[room], ghost)
		return
	}
	if a.portals.ghosts[room] == nil {
		a.portals.ghosts[room] = map[id.UserID]bool{}
	}
	a.portals.ghosts[room][ghost] = true
}

// portalTarget checks the addresses of h, an event (what) for a portal
// room from a participant on another network: From must be one of the
// appservice's ghosts, To a portal room as the YAML or the registry names
// it. It returns the ghost, the room's name and its ID, and the servers to
// join it through.
func (a *Adapter) portalTarget(ctx context.Context, h event.Header, what string) (ghost id.UserID, name string, room id.RoomID, via []string, err error) {
	if h.From.Network != event.Matrix || h.To.Network != event.Matrix {
		return "", "", "", nil, bridges.Permanent(fmt.Errorf("send to matrix: %s %s → %s is not on matrix", what, h.From, h.To))
	}
	ghost, name = id.UserID(h.From.ID), h.To.ID
	if !a.owns(ghost) || ghost == a.bot || !validUserID(ghost.String()) {
		return "", "", "", nil, bridges.Permanent(fmt.Errorf("send to matrix: %s from %s, not a ghost of the appservice", what, ghost))
	}
	if !a.isPortal(name) {
		return "", "", "", nil, bridges.Permanent(fmt.Errorf("send to matrix: %s is not a portal room", name))
	}
	room, via, err = a.resolvePortal(ctx, name, false)
	if err != nil {
		if isTransient(err) || isTokenError(err) {
			return "", "", "", nil, a.classify(err)
		}
		return "", "", "", nil, fmt.Errorf("%w: %w", errPortalClosed, err)
	}
	return ghost, name, room, via, nil
}

// joinAsGhost has ghost registered, named display and joined to the portal
// room name (room), before it acts there.
func (a *Adapter) joinAsGhost(ctx context.Context, name string, room id.RoomID, via []string, ghost id.UserID, display string) error {
	if err := a.ensureRegistered(ctx, ghost); err != nil {
		return a.classify(fmt.Errorf("register ghost %s: %w", ghost, err))
	}
	a.ensureDisplayName(ctx, ghost, display)
	if err := a.learnGhostIn(ctx, name, room, ghost); err != nil {
		return err
	}
	return a.ensureGhostIn(ctx, name, room, via, ghost)
}

// sendToPortal posts msg, a post for a portal room (To) from a participant
// on another network (From, their ghost), as the ghost: registered, named
// msg.FromName and joined to the room first. Like a DM (sendInDM), a resend
// reuses the transaction ID derived from msg.ID, and a repeated attempt
// looks for the mark of an earlier one first.
func (a *Adapter) sendToPortal(ctx context.Context, msg *event.Message) (string, error) {
	ghost, name, room, via, err := a.portalTarget(ctx, msg.Header, "post")
	if err != nil {
		return "", err
	}
	if err := a.joinAsGhost(ctx, name, room, via, ghost, msg.FromName); err != nil {
		return "", err
	}
	txn := txnID(msg.ID)
	key := portalKey(room)
	if txn != "" && a.mustLook(ctx, key) {
		found, err := a.sentBefore(ctx, ghost, room, txn)
		switch {
		case err != nil && (isTransient(err) || isTokenError(err)):
			return "", a.classify(fmt.Errorf("look for %s in %s: %w", txn, name, err))
		case err != nil:
			a.log.Warn("could not look for an earlier send", "room", name, "txn", txn, "err", err)
		case found != "":
			a.log.Info("found the event an earlier attempt sent", "room", name, "txn", txn, "event", found.String())
			return found.String(), nil
		case bridges.AttemptOf(ctx).Resumed:
			a.settle(key)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := a.client(ghost).SendMessageEvent(sctx, room, mevent.EventMessage, markedContent(messageContent(msg), txn),
		mautrix.ReqSendEvent{TransactionID: txn})
	if err != nil {
		err = fmt.Errorf("send as %s in portal room %s: %w", ghost, name, err)
		if errors.Is(err, mautrix.MForbidden) {
			return "", a.forbiddenPost(ctx, room, ghost, err)
		}
		return "", a.classify(err)
	}
	return resp.EventID.String(), nil
}

// forbiddenPost classifies err, the homeserver's refusal of ghost's post in
// room. A ghost still joined may not post there (the room's power levels
// ask more of it): that is final, and its poster is told. A ghost kicked or
// banned since it joined is tried again: the next try joins first, or finds
// that it may not.
func (a *Adapter) forbiddenPost(ctx context.Context, room id.RoomID, ghost id.UserID, err error) error {
	content, found, serr := a.memberState(ctx, room, ghost)
	if serr == nil && found && content.Membership == mevent.MembershipJoin {
		return bridges.Permanent(err)
	}
	a.setGhostIn(room, ghost, false)
	return err
}

// portalFailure tells user, in the portal room name, that their post there
// could not be delivered: an m.notice from the bot that names them.
func (a *Adapter) portalFailure(ctx context.Context, f *event.Failure, name string) (string, error) {
	user := id.UserID(f.To.ID)
	if f.To.Network != event.Matrix || !validUserID(user.String()) || a.owns(user) {
		return "", bridges.Permanent(fmt.Errorf("send to matrix: failure for %s, not a user", f.To))
	}
	room, err := a.joinBot(ctx, name)
	if err != nil {
		return "", err
	}
	txn := ""
	if f.EventID != "" || f.ID != "" {
		txn = txnID("failure|" + f.EventID + "|" + f.ID)
	}
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	text := user.String() + ": " + failureText(f)
	resp, err := a.client(a.bot).SendMessageEvent(sctx, room, mevent.EventMessage, noticeContent(text), mautrix.ReqSendEvent{TransactionID: txn})
	if err != nil {
		return "", a.classify(fmt.Errorf("send notice in portal room %s: %w", name, err))
	}
	return resp.EventID.String(), nil
}

// handlePortalMessage dispatches a post a real user wrote in the portal
// room name (the caller has left out the appservice's own users). What
// Parley cannot bridge is told to the sender with a notice from the bot in
// the room, as in a DM.
func (a *Adapter) handlePortalMessage(ctx context.Context, evt *mevent.Event, name string) error {
	var reason error
	switch evt.Type.Type {
	case mevent.EventEncrypted.Type:
		reason = fmt.Errorf("encrypted messages are %w", errUnsupported)
	case mevent.EventSticker.Type:
		reason = fmt.Errorf("stickers are %w", errUnsupported)
	default:
		msg, err := messageFromMatrix(evt, "")
		switch {
		case errors.Is(err, errUnsupported):
			reason = err
		case err != nil:
			a.log.Warn("skipped malformed message", "event", evt.ID.String(), "err", err)
			return nil
		default:
			msg.To = event.Address{Network: event.Matrix, ID: name}
			msg.Room = true
			msg.FromName = a.memberName(ctx, evt.RoomID, evt.Sender)
			host, _ := a.started()
			err := host.Dispatch(ctx, msg)
			switch {
			case err == nil:
				return nil
			case errors.Is(err, bridges.ErrNoRoute):
				a.log.Info("post in a room the core has no portal for", "room", name, "event", evt.ID.String(), "err", err)
				return nil
			case errors.Is(err, bridges.ErrRefused):
				reason = err
			default:
				return fmt.Errorf("dispatch %s: %w", evt.ID, err)
			}
		}
	}
	a.log.Info("post not bridged", "room", name, "event", evt.ID.String(), "from", evt.Sender.String(), "reason", reason)
	return a.notify(ctx, evt.RoomID, a.bot, evt.ID, evt.Sender.String()+": "+undeliveredText(reason))
}

// memberName returns the display name of user in room: known from the
// member events of the room that reached the adapter, or else read once as
// the bot (GET /rooms/{room}/state/m.room.member/{user}). "" when the user
// has none or it cannot be read.
func (a *Adapter) memberName(ctx context.Context, room id.RoomID, user id.UserID) string {
	a.portals.mu.Lock()
	name, ok := a.portals.names[room][user]
	a.portals.mu.Unlock()
	if ok {
		return name
	}
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var content mevent.MemberEventContent
	if err := a.client(a.bot).StateEvent(sctx, room, mevent.StateMember, user.String(), &content); err != nil {
		a.log.Debug("display name of a room member unknown", "room", room.String(), "user", user.String(), "err", err)
		return ""
	}
	a.setMemberName(room, user, content.Displayname)
	return content.Displayname
}

func (a *Adapter) setMemberName(room id.RoomID, user id.UserID, name string) {
	a.portals.mu.Lock()
	defer a.portals.mu.Unlock()
	if a.portals.names[room] == nil {
		a.portals.names[room] = map[id.UserID]string{}
	}
	a.portals.names[room][user] = name
}

// handlePortalMember follows the membership of the portal room name: the
// bot invited joins (and the posts waiting for the room are tried again);
// the bot or a ghost that leaves or is removed is forgotten as a member, so
// that the next post joins again; a user's join, profile change or leave
// is dispatched as an event.Member (dispatchMember, member.go) and keeps
// their display name known. A ghost invited by a user joins, without the DM
// guess of acceptInvite.
func (a *Adapter) handlePortalMember(ctx context.Context, evt *mevent.Event, name string, target id.UserID, content *mevent.MemberEventContent) error {
	room := evt.RoomID
	switch content.Membership {
	case mevent.MembershipInvite:
		if a.owns(evt.Sender) || !a.owns(target) {
			return nil
		}
		if target == a.bot {
			a.portals.mu.Lock()
			a.portals.botIn[room] = false
			a.portals.mu.Unlock()
			if _, err := a.joinBot(ctx, name); err != nil && !errors.Is(err, errPortalClosed) && !bridges.IsPermanent(err) {
				return fmt.Errorf("join portal room %s when invited: %w", name, err)
			}
			return nil
		}
		if err := a.ensureRegistered(ctx, target); err != nil {
			if isTransient(err) {
				return fmt.Errorf("register invited ghost %s: %w", target, err)
			}
			return nil
		}
		jctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		if _, err := a.client(target).JoinRoomByID(jctx, room); err != nil {
			if isTransient(err) {
				return fmt.Errorf("join %s as %s: %w", room, target, err)
			}
			a.log.Warn("ghost could not join the portal room it was invited to", "room", name, "ghost", target.String(), "err", err)
			return nil
		}
		a.setGhostIn(room, target, true)
	case mevent.MembershipJoin:
		switch {
		case target == a.bot:
			a.portals.mu.Lock()
			a.portals.botIn[room] = true
			a.portals.mu.Unlock()
		case a.owns(target):
			a.setGhostIn(room, target, true)
			a.setMemberName(room, target, content.Displayname)
		default:
			if err := a.dispatchMember(ctx, evt, name, target, content); err != nil {
				return err
			}
			a.setMemberName(room, target, content.Displayname)
		}
	case mevent.MembershipLeave, mevent.MembershipBan:
		switch {
		case target == a.bot:
			a.portals.mu.Lock()
			a.portals.botIn[room] = false
			a.portals.mu.Unlock()
			a.log.Warn("the bot is no longer in the portal room; it joins again when it may", "room", name, "by", evt.Sender.String())
			a.checkAgain() // the connect loop joins the portal rooms again
		case a.owns(target):
			a.setGhostIn(room, target, false)
			a.forgetRoomName(room, target)
		default:
			if err := a.dispatchMember(ctx, evt, name, target, content); err != nil {
				return err
			}
			a.forgetRoomName(room, target)
		}
	}
	return nil
}

// portalOfInvite returns the portal room that an invite of the bot to room
// is for. An alias not resolved yet (it did not exist when the bot tried)
// is resolved now.
func (a *Adapter) portalOfInvite(ctx context.Context, room id.RoomID) (string, bool) {
	if name, ok := a.portalOf(room); ok {
		return name, true
	}
	for _, name := range a.portalNames() {
		if !isAlias(name) {
			continue
		}
		if got, _, err := a.resolvePortal(ctx, name, true); err == nil && got == room {
			return name, true
		}
	}
	return "", false
}

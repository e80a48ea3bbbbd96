package matrix

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/bridges"
)

// The application service API (Matrix spec, Application Service API): what
// the homeserver calls on Parley.

// maxTransactionSize bounds a transaction body. Homeservers send at most
// about a hundred events of at most 64 KiB each, plus ephemeral events.
const maxTransactionSize = 32 << 20

// transactionTimeout bounds the handling of one transaction, which goes on
// when the homeserver gives up waiting (it retries the same transaction).
const transactionTimeout = 2 * time.Minute

var (
	errNotJSON = errors.New("body is not JSON")
	errBadJSON = errors.New("body is not a transaction")
)

// transaction is what Parley reads of a transaction body.
type transaction struct {
	// Events are the room events (PDUs) that could be decoded, in order.
	Events []*mevent.Event
	// Presence are the m.presence ephemeral events (MSC2409), in order.
	Presence []presenceEvent
	// Skipped says why the other entries of "events" and "ephemeral" were
	// left out: their fields had the wrong JSON types.
	Skipped []error
}

// parseTransaction parses the body of PUT /_matrix/app/v1/transactions/{txnId}.
// It fails with errNotJSON when body is not JSON, and with errBadJSON when it
// is not an object, "events" is not an array, or an entry of it is not an
// object. An event object whose fields have the wrong types is skipped (and
// said in Skipped) rather than failing the transaction: a homeserver retries
// a refused transaction forever, holding back everything after it.
// Of the ephemeral events ("ephemeral", or the unstable
// "de.sorunome.msc2409.ephemeral" when the stable list is absent: Synapse
// sends the same list under both), m.presence is read; any fault in them is
// said in Skipped, never an error, since they are not durable. To-device
// events are not read.
func parseTransaction(body []byte) (*transaction, error) {
	if !json.Valid(body) {
		return nil, errNotJSON
	}
	if !isObject(body) {
		return nil, fmt.Errorf("%w: not a JSON object", errBadJSON)
	}
	var top struct {
		Events            json.RawMessage `json:"events"`
		Ephemeral         json.RawMessage `json:"ephemeral"`
		UnstableEphemeral json.RawMessage `json:"de.sorunome.msc2409.ephemeral"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadJSON, err)
	}
	txn := &transaction{}
	ephemeral := top.Ephemeral
	if len(ephemeral) == 0 || string(ephemeral) == "null" {
		ephemeral = top.UnstableEphemeral
	}
	txn.Presence, txn.Skipped = parseEphemeral(ephemeral)
	if len(top.Events) == 0 || string(top.Events) == "null" {
		return txn, nil
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(top.Events, &entries); err != nil {
		return nil, fmt.Errorf("%w: events is not an array", errBadJSON)
	}
	for i, raw := range entries {
		if !isObject(raw) {
			return nil, fmt.Errorf("%w: events[%d] is not an object", errBadJSON, i)
		}
		evt := new(mevent.Event)
		if err := json.Unmarshal(raw, evt); err != nil {
			txn.Skipped = append(txn.Skipped, fmt.Errorf("events[%d]: %w", i, err))
			continue
		}
		txn.Events = append(txn.Events, evt)
	}
	return txn, nil
}

func isObject(raw []byte) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// handler serves the application service API. Every request must carry the
// hs_token; nothing else is looked at before it is checked.
func (a *Adapter) handler() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/_matrix/app/v1", ""} { // "" : legacy paths
		mux.HandleFunc("PUT "+prefix+"/transactions/{txnID}", a.putTransaction)
		mux.HandleFunc("GET "+prefix+"/users/{userID}", a.getUser)
		mux.HandleFunc("GET "+prefix+"/rooms/{alias}", a.getRoom)
	}
	mux.HandleFunc("POST /_matrix/app/v1/ping", a.postPing)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request")
	})
	return a.authenticate(mux)
}

// authenticate checks the hs_token (Matrix spec, Application Service API,
// "Authorization"): "Authorization: Bearer <hs_token>", or the legacy
// ?access_token=. Missing: 401 M_UNAUTHORIZED; wrong: 403 M_FORBIDDEN.
func (a *Adapter) authenticate(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(a.cfg.HSToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := ""
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, t, ok := strings.Cut(h, " ")
			if ok && strings.EqualFold(scheme, "Bearer") {
				token = strings.TrimSpace(t)
			}
		}
		if token == "" {
			token = r.URL.Query().Get("access_token")
		}
		if token == "" {
			writeError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", "missing hs_token")
			return
		}
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			a.log.Warn("appservice request with a wrong hs_token", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "M_FORBIDDEN", "wrong hs_token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// putTransaction handles PUT /_matrix/app/v1/transactions/{txnId}. It
// answers 200 only once every event was handled, and remembers the
// transaction in Links (see transactionKey) so that a retry after that is
// answered 200 at once. Transactions are handled one at a time, in arrival order. A
// failure to store (in Dispatch or Links) answers 500: the homeserver sends
// the transaction again, and events already dispatched are recognised as
// duplicates by the routing core. Presence is dispatched after the room
// events and never fails the transaction.
func (a *Adapter) putTransaction(w http.ResponseWriter, r *http.Request) {
	txnID := r.PathValue("txnID")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTransactionSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "transaction too large")
			return
		}
		writeError(w, http.StatusBadRequest, "M_NOT_JSON", "could not read body")
		return
	}
	txn, err := parseTransaction(body)
	switch {
	case errors.Is(err, errNotJSON):
		writeError(w, http.StatusBadRequest, "M_NOT_JSON", err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", err.Error())
		return
	}
	log := a.log.With("txn", txnID)
	for _, skipped := range txn.Skipped {
		log.Warn("skipped malformed event", "err", skipped)
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), transactionTimeout)
	defer cancel()
	a.txnMu.Lock()
	defer a.txnMu.Unlock()
	_, links := a.started()
	key := transactionKey(txnID, txn, body)
	if _, done, err := links.Get(ctx, key); err != nil {
		log.Error("read transaction link", "err", err)
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "storage error")
		return
	} else if done {
		log.Debug("duplicate transaction")
		writeEmpty(w)
		return
	}
	for _, evt := range txn.Events {
		if err := a.handleEvent(ctx, evt); err != nil {
			log.Error("transaction failed; the homeserver will retry", "event", evt.ID.String(), "err", err)
			writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "could not handle the transaction")
			return
		}
	}
	for _, p := range txn.Presence {
		a.handlePresence(ctx, p)
	}
	if err := links.Put(ctx, key, time.Now().UTC().Format(time.RFC3339)); err != nil {
		log.Error("write transaction link", "err", err)
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "storage error")
		return
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		// The event IDs tell whether an event ever reached Parley.
		ids := make([]string, len(txn.Events))
		for i, evt := range txn.Events {
			ids[i] = evt.ID.String()
		}
		log.Debug("transaction done", "events", len(txn.Events), "event_ids", ids, "presence", len(txn.Presence))
	}
	writeEmpty(w)
}

// transactionKey returns the key in Links of the transaction txnID: its ID
// and a digest of its event IDs (of its body, when it has no events). A
// homeserver may give a transaction ID again to other events: Synapse on
// SQLite counts its transaction IDs from 1 again after a restart, and a key
// of the ID alone answered those transactions as duplicates, losing their
// events. A retry has the same events, so the same key.
func transactionKey(txnID string, txn *transaction, body []byte) string {
	h := sha256.New()
	if len(txn.Events) == 0 {
		h.Write(body)
	}
	for _, evt := range txn.Events {
		h.Write([]byte(evt.ID.String()))
		h.Write([]byte{0})
	}
	return "txn:" + txnID + ":" + hex.EncodeToString(h.Sum(nil)[:12])
}

// getUser handles GET /_matrix/app/v1/users/{userId}: a user in Parley's
// namespaces exists (it is registered now); any other does not.
func (a *Adapter) getUser(w http.ResponseWriter, r *http.Request) {
	user := id.UserID(r.PathValue("userID"))
	if !a.owns(user) || !validUserID(user.String()) {
		writeError(w, http.StatusNotFound, "M_NOT_FOUND", "no such user")
		return
	}
	if err := a.ensureRegistered(r.Context(), user); err != nil {
		a.log.Error("register queried ghost", "user", user.String(), "err", err)
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "could not register the user")
		return
	}
	writeEmpty(w)
}

// postPing handles POST /_matrix/app/v1/ping.
func (a *Adapter) postPing(w http.ResponseWriter, r *http.Request) {
	writeEmpty(w)
}

func writeEmpty(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "{}")
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}{code, msg})
}

// handleEvent handles one room event of a transaction. It returns an error
// only when the transaction must be retried (a storage error, the
// homeserver unreachable); anything the adapter cannot use is logged and
// skipped.
func (a *Adapter) handleEvent(ctx context.Context, evt *mevent.Event) error {
	if evt.ID == "" || evt.RoomID == "" {
		a.log.Warn("skipped room event without event_id or room_id", "type", evt.Type.Type)
		return nil
	}
	switch evt.Type.Type {
	case mevent.StateMember.Type:
		if evt.StateKey == nil {
			return nil
		}
		return a.handleMember(ctx, evt)
	case mevent.EventMessage.Type, mevent.EventEncrypted.Type, mevent.EventSticker.Type:
		return a.handleMessage(ctx, evt)
	case mevent.StateTopic.Type:
		return a.handleTopic(ctx, evt)
	}
	if isCallEvent(evt.Type.Type) {
		return a.handleCall(ctx, evt)
	}
	return nil
}

// handleMember acts on membership changes. In a portal room, or on an
// invite of the bot to one, handlePortalMember does. Elsewhere: a ghost
// invited by a real user joins (and learns the DM link when the invite is
// is_direct or the room is just the two of them); a ghost's own is_direct
// invite of a real user links the DM it created, if that is not done yet
// (learnOwnDM); when either member of a DM leaves, the DM link is dropped
// and the ghost leaves too.
func (a *Adapter) handleMember(ctx context.Context, evt *mevent.Event) error {
	target := id.UserID(*evt.StateKey)
	var content mevent.MemberEventContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &content); err != nil {
		a.log.Warn("skipped malformed member event", "event", evt.ID.String(), "err", err)
		return nil
	}
	if name, ok := a.portalOf(evt.RoomID); ok {
		return a.handlePortalMember(ctx, evt, name, target, &content)
	}
	if muc, ok, err := a.onDemandOf(ctx, evt.RoomID); err != nil || ok {
		if err != nil {
			return err
		}
		return a.handleOnDemandMember(ctx, evt, muc, target, &content)
	}
	if content.Membership == mevent.MembershipInvite && target == a.bot && !a.owns(evt.Sender) {
		if name, ok := a.portalOfInvite(ctx, evt.RoomID); ok {
			return a.handlePortalMember(ctx, evt, name, target, &content)
		}
	}
	switch content.Membership {
	case mevent.MembershipInvite:
		if a.owns(evt.Sender) && evt.Sender != a.bot && !a.owns(target) && content.IsDirect {
			return a.learnOwnDM(ctx, evt.Sender, target, evt.RoomID)
		}
		if !a.owns(target) || a.owns(evt.Sender) {
			return nil
		}
		return a.acceptInvite(ctx, evt, target, content.IsDirect)
	case mevent.MembershipLeave, mevent.MembershipBan:
		ghost, user, ok, err := a.roomPair(ctx, evt.RoomID)
		if err != nil || !ok || (target != ghost && target != user) {
			return err
		}
		if err := a.forgetDM(ctx, ghost, user, evt.RoomID); err != nil {
			return err
		}
		if target == user {
			lctx, cancel := context.WithTimeout(ctx, requestTimeout)
			defer cancel()
			if _, err := a.client(ghost).LeaveRoom(lctx, evt.RoomID); err != nil {
				a.log.Warn("ghost did not leave the room its user left", "room", evt.RoomID.String(), "ghost", ghost.String(), "err", err)
			}
		}
	}
	return nil
}

// acceptInvite joins ghost to the room it was invited to, and links the
// room as the DM of ghost and the inviter when it is one.
func (a *Adapter) acceptInvite(ctx context.Context, evt *mevent.Event, ghost id.UserID, isDirect bool) error {
	log := a.log.With("room", evt.RoomID.String(), "ghost", ghost.String(), "inviter", evt.Sender.String())
	if err := a.ensureRegistered(ctx, ghost); err != nil {
		if isTransient(err) {
			return fmt.Errorf("register invited ghost %s: %w", ghost, err)
		}
		log.Warn("invited ghost cannot be registered", "err", err)
		return nil
	}
	jctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	cli := a.client(ghost)
	if _, err := cli.JoinRoomByID(jctx, evt.RoomID); err != nil {
		if isTransient(err) {
			return fmt.Errorf("join %s as %s: %w", evt.RoomID, ghost, err)
		}
		log.Warn("ghost could not join the room it was invited to", "err", err)
		return nil
	}
	direct := isDirect
	if !direct {
		members, err := cli.JoinedMembers(jctx, evt.RoomID)
		if err != nil {
			if isTransient(err) {
				return fmt.Errorf("members of %s: %w", evt.RoomID, err)
			}
			log.Warn("members of joined room unknown", "err", err)
			return nil
		}
		_, hasInviter := members.Joined[evt.Sender]
		_, hasGhost := members.Joined[ghost]
		direct = len(members.Joined) == 2 && hasInviter && hasGhost
	}
	if !direct || ghost == a.bot {
		log.Debug("joined a room that is not a dm")
		return nil
	}
	return a.learnDM(ctx, ghost, evt.Sender, evt.RoomID)
}

// handleMessage dispatches a message a real user wrote in a DM room, or in
// a portal room (handlePortalMessage). The sender is told with a notice in
// the room when Parley cannot deliver it (the recipient maps to nobody, the
// sender may not use the gateway, the message is of a kind Parley does not
// bridge).
func (a *Adapter) handleMessage(ctx context.Context, evt *mevent.Event) error {
	if a.owns(evt.Sender) {
		return nil // our own ghosts and bot: never bridge back
	}
	if name, ok := a.portalOf(evt.RoomID); ok {
		return a.handlePortalMessage(ctx, evt, name)
	}
	ghost, _, ok, err := a.roomPair(ctx, evt.RoomID)
	if err != nil {
		return err
	}
	if !ok {
		a.log.Debug("message in a room that is not a dm", "room", evt.RoomID.String(), "event", evt.ID.String())
		return nil
	}
	var reason error
	switch evt.Type.Type {
	case mevent.EventEncrypted.Type:
		reason = fmt.Errorf("encrypted messages are %w", errUnsupported)
	case mevent.EventSticker.Type:
		reason = fmt.Errorf("stickers are %w", errUnsupported)
	default:
		msg, err := messageFromMatrix(evt, ghost)
		switch {
		case errors.Is(err, errUnsupported):
			reason = err
		case err != nil:
			a.log.Warn("skipped malformed message", "event", evt.ID.String(), "err", err)
			return nil
		default:
			host, _ := a.started()
			err := host.Dispatch(ctx, msg)
			switch {
			case err == nil:
				return nil
			case errors.Is(err, bridges.ErrNoRoute), errors.Is(err, bridges.ErrRefused):
				reason = err
			default:
				return fmt.Errorf("dispatch %s: %w", evt.ID, err)
			}
		}
	}
	a.log.Info("message not delivered", "event", evt.ID.String(), "from", evt.Sender.String(), "reason", reason)
	return a.notify(ctx, evt.RoomID, ghost, evt.ID, undeliveredText(reason))
}

// undeliveredText is the notice telling a Matrix user why their message
// was not delivered.
func undeliveredText(reason error) string {
	var why string
	switch {
	case errors.Is(reason, bridges.ErrNoRoute):
		why = "this address does not lead to anyone"
	case errors.Is(reason, bridges.ErrRefused):
		why = "you may not use the gateway to reach this recipient"
	default:
		why = reason.Error()
	}
	return "Your message could not be delivered: " + why + "."
}

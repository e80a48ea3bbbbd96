package peertest

import (
	"context"
	"errors"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// MatrixMessage is an m.room.message a MatrixClient saw.
type MatrixMessage struct {
	Room    id.RoomID
	Sender  id.UserID
	EventID id.EventID
	MsgType event.MessageType
	Body    string
	HTML    string
}

// MatrixClient is a real Matrix client (mautrix's client-server API) for one
// registered user. It syncs in the background, joins every room it is
// invited to (recording the invites), and delivers messages from others on
// Messages in order.
type MatrixClient struct {
	*mautrix.Client
	Messages chan MatrixMessage

	mu      sync.Mutex
	invites map[id.RoomID]id.UserID
}

// ConnectMatrix registers user on h and starts syncing. The sync loop stops
// when the test ends.
func ConnectMatrix(t TB, h *Homeserver, user, password string) *MatrixClient {
	t.Helper()
	userID, token := h.Register(t, user, password)
	cli, err := mautrix.NewClient(h.URL, id.UserID(userID), token)
	if err != nil {
		t.Fatal(err)
	}
	c := &MatrixClient{Client: cli, Messages: make(chan MatrixMessage, 4096), invites: map[id.RoomID]id.UserID{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		c.sync(ctx)
	}()
	return c
}

// sync syncs with set_presence=offline, so that syncing never overrides the
// presence a test sets with SetPresence.
func (c *MatrixClient) sync(ctx context.Context) {
	since := ""
	// A homeserver may repeat an event in a later sync (Dendrite does around
	// a join); clients recognise it by its ID.
	seen := map[id.EventID]bool{}
	for ctx.Err() == nil {
		resp, err := c.SyncRequest(ctx, 5000, since, "", false, event.PresenceOffline)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		since = resp.NextBatch
		for room, inv := range resp.Rooms.Invite {
			var inviter id.UserID
			for _, e := range inv.State.Events {
				if e.Type == event.StateMember && e.GetStateKey() == c.UserID.String() {
					inviter = e.Sender
				}
			}
			c.mu.Lock()
			c.invites[room] = inviter
			c.mu.Unlock()
			_, _ = c.JoinRoomByID(ctx, room)
		}
		for room, joined := range resp.Rooms.Join {
			for _, e := range joined.Timeline.Events {
				if e.Type != event.EventMessage || e.Sender == c.UserID || seen[e.ID] {
					continue
				}
				seen[e.ID] = true
				_ = e.Content.ParseRaw(e.Type)
				msg := e.Content.AsMessage()
				c.Messages <- MatrixMessage{Room: room, Sender: e.Sender, EventID: e.ID,
					MsgType: msg.MsgType, Body: msg.Body, HTML: msg.FormattedBody}
			}
		}
	}
}

// Inviter returns who invited the client to room, if it was invited.
func (c *MatrixClient) Inviter(room id.RoomID) (id.UserID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.invites[room]
	return u, ok
}

// NextMessage returns the next message that match accepts, dropping others,
// or false when ctx ends first.
func (c *MatrixClient) NextMessage(ctx context.Context, match func(MatrixMessage) bool) (MatrixMessage, bool) {
	for {
		select {
		case m := <-c.Messages:
			if match == nil || match(m) {
				return m, true
			}
		case <-ctx.Done():
			return MatrixMessage{}, false
		}
	}
}

// SendText sends an m.text message to room with a fixed transaction ID.
func (c *MatrixClient) SendText(ctx context.Context, room id.RoomID, txnID, body string) (id.EventID, error) {
	resp, err := c.SendMessageEvent(ctx, room, event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: body}, mautrix.ReqSendEvent{TransactionID: txnID})
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}

package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/parleygw/parley/internal/peertest"
)

// dm opens the DM between alice (XMPP) and bob (Matrix) the way a user
// would: alice writes to bob's ghost JID, bob accepts the invite of alice's
// ghost and answers. It returns the room.
func dm(t testing.TB, st *stack, alice *peertest.XMPPClient, bob *peertest.MatrixClient) id.RoomID {
	t.Helper()
	ctx := timeout(t, 60*time.Second)
	alice.Send(t, bobGhostJID, "open-1", "hello from xmpp", true)
	if e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "receipt" || e.Ev == "error" }); !ok || e.Ev != "receipt" || e.ID != "open-1" {
		t.Fatalf("alice got no receipt for her first message: %+v", e)
	}
	m, ok := bob.NextMessage(ctx, nil)
	if !ok {
		t.Fatal("bob received nothing from alice")
	}
	if m.Body != "hello from xmpp" || m.Sender != aliceGhostMXID {
		t.Fatalf("bob got %+v", m)
	}
	if inviter, _ := bob.Inviter(m.Room); inviter != aliceGhostMXID {
		t.Errorf("the DM was not opened by alice's ghost: inviter %q", inviter)
	}
	if _, err := bob.SendText(ctx, m.Room, "open-2", "hello from matrix"); err != nil {
		t.Fatal(err)
	}
	e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" || e.Ev == "error" })
	if !ok || e.Ev != "message" || e.Body != "hello from matrix" || bare(e.From) != bobGhostJID {
		t.Fatalf("alice got %+v, %v", e, ok)
	}
	return m.Room
}

// chat starts a stack on homeserver hs with alice on XMPP and bob on
// Matrix, and opens their DM.
func chat(t testing.TB, hs string) (*stack, *peertest.XMPPClient, *peertest.MatrixClient, id.RoomID) {
	t.Helper()
	st := newStack(t, stackSettings{homeserver: hs})
	st.prosody.Register(t, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	bob := peertest.ConnectMatrix(t, st.hs, "bob", "bobpassword")
	return st, alice, bob, dm(t, st, alice, bob)
}

func bare(jid string) string {
	for i := range len(jid) {
		if jid[i] == '/' {
			return jid[:i]
		}
	}
	return jid
}

func TestDirectMessages(t *testing.T) {
	for _, hs := range []string{"synapse", "dendrite"} {
		t.Run(hs, func(t *testing.T) {
			st, alice, bob, room := chat(t, hs)

			// The ghost carries alice's name, and the DM is marked direct.
			ctx := timeout(t, 30*time.Second)
			if name, err := bob.GetDisplayName(ctx, aliceGhostMXID); err != nil || name.DisplayName == "" {
				t.Errorf("alice's ghost has no display name: %+v, %v", name, err)
			}

			// A second exchange reuses the same room both ways.
			alice.Send(t, bobGhostJID, "again-1", "second from xmpp", false)
			if m, ok := bob.NextMessage(ctx, nil); !ok || m.Room != room || m.Body != "second from xmpp" {
				t.Fatalf("bob got %+v in another room or nothing (DM is %s)", m, room)
			}

			// An identity's alias: alice reaches carol by name.
			carol := peertest.ConnectMatrix(t, st.hs, "carol", "carolpassword")
			alice.Send(t, carolAliasJID, "carol-1", "hi carol", true)
			if m, ok := carol.NextMessage(ctx, nil); !ok || m.Body != "hi carol" || m.Sender != aliceGhostMXID {
				t.Fatalf("carol got %+v, %v", m, ok)
			}
			if _, err := carol.SendText(ctx, mustRoom(t, carol, ctx), "carol-2", "hi alice"); err != nil {
				t.Fatal(err)
			}
			e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" && e.Body == "hi alice" })
			if !ok || bare(e.From) != carolAliasJID {
				t.Fatalf("alice got carol's answer from %q (want her alias %s)", e.From, carolAliasJID)
			}
			if e.Nick != "Carol Matrix" {
				t.Errorf("carol's nick = %q, want her YAML display name", e.Nick)
			}
		})
	}
}

// An XMPP user who writes to a YAML identity's ghost JID (not its alias)
// gets the answers from that ghost JID, so their client keeps one chat, also
// after Parley restarts.
func TestAnswersComeFromTheGhostJIDWrittenTo(t *testing.T) {
	st := newStack(t, stackSettings{homeserver: "synapse"})
	st.prosody.Register(t, "alice", "alicepass")
	st.start(true)
	alice := peertest.ConnectXMPP(t, st.prosody, "alice", "alicepass")
	carol := peertest.ConnectMatrix(t, st.hs, "carol", "carolpassword")
	ctx := timeout(t, 90*time.Second)

	alice.Send(t, carolGhostJID, "ghost-1", "hi carol, by your ghost JID", true)
	m, ok := carol.NextMessage(ctx, nil)
	if !ok || m.Body != "hi carol, by your ghost JID" || m.Sender != aliceGhostMXID {
		t.Fatalf("carol got %+v, %v", m, ok)
	}
	answer := func(id, body string) {
		t.Helper()
		if _, err := carol.SendText(ctx, m.Room, id, body); err != nil {
			t.Fatal(err)
		}
		e, ok := alice.Next(ctx, func(e peertest.XMPPEvent) bool { return e.Ev == "message" && e.Body == body })
		if !ok {
			t.Fatalf("alice did not get %q", body)
		}
		if bare(e.From) != carolGhostJID {
			t.Errorf("alice wrote to %s and got %q from %s: her client opens a second chat", carolGhostJID, body, e.From)
		}
	}
	answer("ghost-2", "hi alice")

	st.stop(syscall.SIGTERM)
	st.start(true)
	answer("ghost-3", "hi again, after a restart")
}

func mustRoom(t *testing.T, c *peertest.MatrixClient, ctx context.Context) id.RoomID {
	t.Helper()
	rooms, err := c.JoinedRooms(ctx)
	if err != nil || len(rooms.JoinedRooms) == 0 {
		t.Fatalf("%s has no room: %v", c.UserID, err)
	}
	return rooms.JoinedRooms[0]
}

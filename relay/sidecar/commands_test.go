package sidecar_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/sidecar"
)

// userWS is an end user's WebSocket at the edge, spoken by coder/websocket (an independent
// client library); every reply it reads must fit api/asyncapi.yaml.
type userWS struct {
	c    *websocket.Conn
	spec *relaytest.Spec
}

func dialEdge(t *testing.T, edge *testEdge, path, token string) *userWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(edge.url(path), "http://", "ws://", 1),
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &userWS{c: c, spec: relaytest.LoadSpec(t)}
}

// command sends a command that must fit api/asyncapi.yaml's EdgeCommand.
func (u *userWS) command(t *testing.T, command string) {
	t.Helper()
	u.spec.CheckMessage(t, "EdgeCommand", []byte(command))
	u.send(t, command)
}

// send writes one text frame.
func (u *userWS) send(t *testing.T, command string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := u.c.Write(ctx, websocket.MessageText, []byte(command)); err != nil {
		t.Fatalf("sending %s: %v", command, err)
	}
}

// frame is one text frame from the edge: an event (a CloudEvent: specversion set) or a
// command's reply (type, and no specversion).
type frame struct {
	SpecVersion string `json:"specversion"`
	Subject     string `json:"subject"`
	Data        struct {
		N int `json:"n"`
	} `json:"data"`

	Type    string   `json:"type"`
	Keys    []string `json:"keys"`
	At      string   `json:"at"`
	Expires string   `json:"expires"`
	Status  int      `json:"status"`
	Detail  string   `json:"detail"`
	Command string   `json:"command"`
	Key     string   `json:"key"`
}

func (f frame) isEvent() bool { return f.SpecVersion != "" }

func (f frame) String() string {
	if f.isEvent() {
		return fmt.Sprint(f.Subject, " ", f.Data.N)
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// next reads the next text frame; the error is the stream's end.
func (u *userWS) next(t *testing.T) (frame, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := u.c.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if typ != websocket.MessageText || json.Unmarshal(b, &f) != nil || (f.isEvent() == (f.Type == "error" || f.Type == "followed" || f.Type == "unfollowed" || f.Type == "token")) {
		t.Fatalf("the edge sent a frame that is neither an event nor a reply: %v %q", typ, b)
	}
	if !f.isEvent() {
		u.spec.CheckMessage(t, "EdgeReply", b)
	}
	return f, nil
}

// reply reads the next frame, which must be a reply (no event is due).
func (u *userWS) reply(t *testing.T) frame {
	t.Helper()
	f, err := u.next(t)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	if f.isEvent() {
		t.Fatalf("got the event %s, want a reply", f)
	}
	return f
}

// events reads events until it has every one of want ("<subject> <n>"), failing on any other.
func (u *userWS) events(t *testing.T, want ...string) {
	t.Helper()
	left := slices.Clone(want)
	for len(left) > 0 {
		f, err := u.next(t)
		if err != nil {
			t.Fatalf("the stream ended waiting for %q: %v", left, err)
		}
		i := slices.Index(left, f.String())
		if i < 0 {
			t.Fatalf("got %s while waiting for %q", f, left)
		}
		left = slices.Delete(left, i, i+1)
	}
}

// sameShard is a key under prefix that lives on key's shard: published after key, it arrives
// after it, so a stream that follows it shows whether key's event came.
func sameShard(key, prefix string, shards int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprint(prefix, i); shardmap.ShardFor(k, shards) == shardmap.ShardFor(key, shards) {
			return k
		}
	}
}

// A user's WebSocket follows keys while it is connected and stops following them: events of a
// key published after its "followed" reply arrive, none after its "unfollowed" reply, and the
// shard relays are asked for exactly what the edge's streams follow, down to nothing once the
// stream ends.
func TestAnEdgeWebSocketFollowsAndUnfollowsKeysWhileConnected(t *testing.T) {
	const shards = 3
	c := relaytest.StartChannel(t, relaytest.Options{Shards: shards}, 1)
	app := startSidecar(t, c, "")
	edge := startEdge(t, c, sidecar.EdgeOptions{})
	publish := func(key string, n int) {
		t.Helper()
		if code, p := app.publish(t, key, fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
			t.Fatalf("publish to %s: %d %+v", key, code, p)
		}
	}
	token := mint(t, edgeKey, userClaims(edge.audience, "user-42", []string{"user-42", "order-7", "team-7/"}, nil))
	u := dialEdge(t, edge, "/ws?key=user-42", token) // one key: still the merged stream, adjustable
	asEdge := &testSidecar{URL: edge.URL}
	// Another user's stream follows order-7 throughout: the edge gets its events all along, so
	// only u's own subscription decides whether u gets them.
	other := dialEdge(t, edge, "/ws?key=order-7", mint(t, edgeKey, userClaims(edge.audience, "user-7", []string{"order-7"}, nil)))

	// Not followed yet: order-7's event reaches the other stream only (were it to come late to
	// u, u.events below would fail on it).
	publish("order-7", 1)
	publish("user-42", 3)
	other.events(t, "order-7 1")
	u.events(t, "user-42 3")

	u.command(t, `{"follow":["order-7","team-7/"]}`)
	r := u.reply(t)
	if r.Type != "followed" || !slices.Equal(r.Keys, []string{"order-7", "team-7/"}) || r.SpecVersion != "" {
		t.Fatalf("the follow was answered %s", r)
	}
	if _, err := cursor.ParseComposite(r.At, shards); err != nil {
		t.Fatalf("the follow's reply is at %q, not a cursor of the channel's %d shards: %v", r.At, shards, err)
	}
	for _, f := range follows(t, asEdge) {
		if f == "0 keys" {
			t.Fatalf("after following a prefix, the edge's upstreams follow %q, want the prefix on every shard", follows(t, asEdge))
		}
	}
	publish("order-7", 4)
	publish("team-7/a", 5)
	publish("team-7/b/c", 6)
	publish("user-42", 7)
	u.events(t, "order-7 4", "team-7/a 5", "team-7/b/c 6", "user-42 7")

	u.command(t, `{"unfollow":["order-7"]}`)
	if r := u.reply(t); r.Type != "unfollowed" || !slices.Equal(r.Keys, []string{"order-7"}) || r.At == "" {
		t.Fatalf("the unfollow was answered %s", r)
	}
	publish("order-7", 8)
	publish(sameShard("order-7", "team-7/", shards), 9) // followed, after order-7 on its shard
	u.events(t, sameShard("order-7", "team-7/", shards)+" 9")
	other.events(t, "order-7 4", "order-7 8")
	other.c.Close(websocket.StatusNormalClosure, "")

	// The stream ends: every shard's upstream follows nothing any more.
	u.c.Close(websocket.StatusNormalClosure, "")
	relaytest.Eventually(t, 10*time.Second, "the edge's upstreams to follow nothing", func() bool {
		return slices.Equal(follows(t, asEdge), []string{"0 keys", "0 keys", "0 keys"})
	})
}

// A command the token or the limits do not allow, or that is not one, gets an error reply
// that says why and changes nothing: the stream goes on with what it followed, and nothing of
// a refused key arrives. Each of these would pass an edge without its check.
func TestAnEdgeWebSocketRefusesCommandsWithAReasonAndGoesOn(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 1) // one shard: events arrive in the order published
	app := startSidecar(t, c, "")
	edge := startEdge(t, c, sidecar.EdgeOptions{KeysPerStream: 3})
	grant := []string{"user-42", "order-7", "team-7/", "team-8/"}
	token := mint(t, edgeKey, userClaims(edge.audience, "user-42", grant, nil))
	u := dialEdge(t, edge, "/ws?key=user-42&key=order-7", token)

	tests := []struct {
		name, command  string
		status         int
		says, about    string // the detail says, the reply's command is about
		key            string
		publishRefused string // a key that must not reach the stream after the refusal
	}{
		{"a key the token does not grant", `{"follow":["user-43"]}`, 403, `does not grant following \"user-43\"`, "follow", "user-43", "user-43"},
		{"a wider prefix than granted", `{"follow":["team-/"]}`, 403, `does not grant following \"team-/\"`, "follow", "team-/", "team-/x"},
		{"past the keys per stream", `{"follow":["team-7/","team-8/"]}`, 400, "at most 3 keys", "follow", "", "team-8/x"},
		{"unfollowing what is not followed", `{"unfollow":["team-7/"]}`, 400, `does not follow \"team-7/\"`, "unfollow", "team-7/", ""},
		{"not JSON", `follow user-43`, 400, "a JSON object", "", "", ""},
		{"keys that are not a list", `{"follow":"user-43"}`, 400, "a JSON object", "", "", "user-43"},
		{"no keys", `{"follow":[]}`, 400, "names no keys", "follow", "", ""},
		{"two commands in one", `{"follow":["team-7/"],"unfollow":["order-7"]}`, 400, "exactly one of", "", "", "team-7/x"},
		{"an unknown command", `{"subscribe":["user-43"]}`, 400, "unknown field", "", "", "user-43"},
		{"an empty key", `{"follow":[""]}`, 400, "key is empty", "follow", "", ""},
		{"two JSON values", `{"follow":["team-7/"]}{"follow":["team-8/"]}`, 400, "more than one JSON value", "", "", "team-7/y"},
		{"a token that is not one", `{"token":"not-a-jwt"}`, 401, "", "token", "", ""},
		{"a token with a forged signature", `{"token":"` + mint(t, []byte("another-key-another-key-another-k"), userClaims(edge.audience, "user-42", grant, nil)) + `"}`,
			401, "signature does not verify", "token", "", ""},
		{"another user's token", `{"token":"` + mint(t, edgeKey, userClaims(edge.audience, "user-43", grant, nil)) + `"}`,
			403, "another user's", "token", "", ""},
		{"a token that no longer grants a followed key", `{"token":"` + mint(t, edgeKey, userClaims(edge.audience, "user-42", []string{"user-42"}, nil)) + `"}`,
			403, `does not grant following \"order-7\"`, "token", "order-7", ""},
	}
	for n, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u.send(t, tc.command)
			r := u.reply(t)
			if r.Type != "error" || r.Status != tc.status || !strings.Contains(r.Detail, strings.ReplaceAll(tc.says, `\"`, `"`)) || r.Command != tc.about || r.Key != tc.key || r.SpecVersion != "" {
				t.Fatalf("%s was answered %s, want an error %d saying %q about %q (key %q)", tc.command, r, tc.status, tc.says, tc.about, tc.key)
			}
			// The stream goes on, with nothing of what was refused.
			if tc.publishRefused != "" {
				if code, _ := app.publish(t, tc.publishRefused, fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
					t.Fatal("publish failed")
				}
			}
			if code, _ := app.publish(t, "user-42", fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
				t.Fatal("publish failed")
			}
			u.events(t, fmt.Sprint("user-42 ", n))
		})
	}
}

// A fresh token sent on a live WebSocket carries the stream past its first token's expiry;
// a stream whose token is not renewed ends then with 4401.
func TestAFreshTokenExtendsAnEdgeWebSocket(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 1)
	app := startSidecar(t, c, "")
	edge := startEdge(t, c, sidecar.EdgeOptions{})
	short := userClaims(edge.audience, "user-1", []string{"user-1"}, nil)
	short["exp"] = time.Now().Add(3 * time.Second).Unix() // whole seconds: it expires in 2 to 3 s
	renewed := dialEdge(t, edge, "/ws", mint(t, edgeKey, short))
	left := dialEdge(t, edge, "/ws", mint(t, edgeKey, short))

	fresh := userClaims(edge.audience, "user-1", []string{"user-1", "team-1/"}, nil)
	renewed.command(t, `{"token":"`+mint(t, edgeKey, fresh)+`"}`)
	r := renewed.reply(t)
	if want := time.Unix(fresh["exp"].(int64), 0).UTC().Format(time.RFC3339); r.Type != "token" || r.Expires != want {
		t.Fatalf("the fresh token was answered %s, want expires %s", r, want)
	}

	// The stream left on its first token ends when it expires...
	_, err := left.next(t)
	if code := websocket.CloseStatus(err); code != 4401 {
		t.Fatalf("a stream whose token expired ended with %v (%d), want close code 4401", err, code)
	}
	// ...the renewed one lives on, and follows what its fresh token grants.
	renewed.command(t, `{"follow":["team-1/"]}`)
	if r := renewed.reply(t); r.Type != "followed" {
		t.Fatalf("a follow the fresh token grants was answered %s", r)
	}
	for n, key := range []string{"user-1", "team-1/a"} {
		if code, _ := app.publish(t, key, fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
			t.Fatal("publish failed")
		}
	}
	renewed.events(t, "user-1 0", "team-1/a 1")
}

// dialRawEdge opens a WebSocket at the edge with a client that lets the test write any frame.
func dialRawEdge(t *testing.T, edge *testEdge, path, token string) (net.Conn, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}})}
	conn, br, _, err := d.Dial(ctx, strings.Replace(edge.url(path), "http://", "ws://", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if br == nil {
		br = bufio.NewReader(conn)
	}
	return conn, br
}

// closeOfStream reads frames until a close frame and returns its code and reason, and how many
// text frames came before it.
func closeOfStream(t *testing.T, conn net.Conn, br *bufio.Reader) (code ws.StatusCode, reason string, texts int) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("no close frame after %d text frames: %v", texts, err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatal(err)
		}
		switch h.OpCode {
		case ws.OpText:
			texts++
		case ws.OpClose:
			code, reason = ws.ParseCloseFrameData(payload)
			return code, reason, texts
		}
	}
}

// What a WebSocket client sends beyond commands ends its stream with a reason: a flood of
// commands (each follow waits for the shard relays; the client sends 1000 at once), a command
// too big, a binary or a fragmented message.
func TestAnEdgeWebSocketEndsOnAFloodOrAMessageThatIsNoCommand(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 1)
	edge := startEdge(t, c, sidecar.EdgeOptions{})
	token := mint(t, edgeKey, userClaims(edge.audience, "user-42", []string{"user-42", "order-7"}, nil))
	masked := func(op ws.OpCode, fin bool, payload []byte) []byte {
		var b bytes.Buffer
		if err := ws.WriteFrame(&b, ws.MaskFrame(ws.NewFrame(op, fin, payload))); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	var flood []byte
	for i := range 1000 {
		command := `{"follow":["order-7"]}`
		if i%2 == 1 {
			command = `{"unfollow":["order-7"]}`
		}
		flood = append(flood, masked(ws.OpText, true, []byte(command))...)
	}
	for _, tc := range []struct {
		name  string
		send  []byte
		code  ws.StatusCode
		about string
	}{
		{"a flood of commands", flood, ws.StatusPolicyViolation, "commands waiting"},
		{"a command too big", masked(ws.OpText, true, []byte(`{"token":"`+strings.Repeat("t", 17<<10)+`"}`)), ws.StatusMessageTooBig, "at most 16384 bytes"},
		{"a binary message", masked(ws.OpBinary, true, []byte(`{"follow":["order-7"]}`)), ws.StatusUnsupportedData, "not binary"},
		{"a fragmented command", masked(ws.OpText, false, []byte(`{"follow":`)), ws.StatusPolicyViolation, "unfragmented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, br := dialRawEdge(t, edge, "/ws?key=user-42", token)
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write(tc.send); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Logf("writing: %v (the edge may have closed first)", err)
			}
			code, reason, texts := closeOfStream(t, conn, br)
			if code != tc.code || !strings.Contains(reason, tc.about) {
				t.Fatalf("closed with %d %q after %d replies, want %d about %q", code, reason, texts, tc.code, tc.about)
			}
		})
	}
}

// A sidecar's WebSocket (its app's) and a shard relay's take no commands: a message ends the
// stream with 1008, as before edges took commands.
func TestASidecarWebSocketTakesNoCommands(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 1)
	sc := startSidecar(t, c, "")
	for name, url := range map[string]string{
		"sidecar":     sc.channelURL("/ws?key=user-42"),
		"shard relay": c.Replicas[0][0].ChannelURL("/ws?key=user-42"),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, strings.Replace(url, "http://", "ws://", 1), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			if err := conn.Write(ctx, websocket.MessageText, []byte(`{"follow":["order-7"]}`)); err != nil {
				t.Fatal(err)
			}
			_, b, err := conn.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "send no messages") {
				t.Fatalf("after a command the %s sent %q, %v; want close 1008 saying subscribers send no messages", name, b, err)
			}
		})
	}
}

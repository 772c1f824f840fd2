package relay_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/heraldhq/herald/internal/testing/relaytest"
)

// TestCloudEventsSDKRoundTrip is the CloudEvents conformance check: events published with the
// CloudEvents SDK for Go, in binary and in structured mode, are received and parsed back by the
// same SDK with every attribute equal. The relay adds one extension, heraldcursor (the cursor to
// resume from), and nothing else.
func TestCloudEventsSDKRoundTrip(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	stream := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})

	newEvent := func(id string) cloudevents.Event {
		e := cloudevents.NewEvent()
		e.SetID(id)
		e.SetSource("https://shop.example.com/orders")
		e.SetType("com.example.order.created")
		e.SetSubject("order-" + id)
		e.SetTime(time.Date(2026, 12, 2, 10, 11, 12, 345678900, time.UTC))
		e.SetDataSchema("https://shop.example.com/schemas/order.json")
		e.SetExtension("partitionkey", "tenant/7 ä") // needs percent-encoding in a header
		e.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		e.SetExtension("tracestate", "vendor=abc")
		if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{"order": id, "total": 12.5}); err != nil {
			t.Fatal(err)
		}
		return e
	}
	binary := newEvent("b-1")
	structured := newEvent("s-1")
	structured.SetExtension("attempt", int32(3)) // structured mode keeps JSON types
	structured.SetExtension("urgent", true)
	text := newEvent("b-2")
	if err := text.SetData("text/plain", "plain words\nand a second line"); err != nil {
		t.Fatal(err)
	}

	client, err := cloudevents.NewClientHTTP(cehttp.WithTarget(r.ChannelURL("/messages")))
	if err != nil {
		t.Fatal(err)
	}
	send := func(ctx context.Context, e cloudevents.Event) {
		t.Helper()
		if res := client.Send(ctx, e); !cloudevents.IsACK(res) {
			t.Fatalf("publishing %s: %v", e.ID(), res)
		}
	}
	ctx := context.Background()
	send(ctx, binary)
	send(cloudevents.WithEncodingStructured(ctx), structured)
	send(ctx, text)

	for i, sent := range []cloudevents.Event{binary, structured, text} {
		ev := stream.Messages(t, 1, 10*time.Second)[0]
		got := cloudevents.NewEvent()
		if err := json.Unmarshal([]byte(ev.Data), &got); err != nil {
			t.Fatalf("event %d is not a CloudEvent for the SDK: %v\n%s", i, err, ev.Data)
		}
		if c, ok := got.Extensions()["heraldcursor"]; !ok || c != ev.ID {
			t.Fatalf("event %d: heraldcursor %v, want the SSE id %s", i, c, ev.ID)
		}
		exts := got.Extensions()
		delete(exts, "heraldcursor")
		if got.ID() != sent.ID() || got.Source() != sent.Source() || got.Type() != sent.Type() || got.Subject() != sent.Subject() ||
			!got.Time().Equal(sent.Time()) || got.DataSchema() != sent.DataSchema() || got.DataContentType() != sent.DataContentType() ||
			got.SpecVersion() != sent.SpecVersion() || string(got.Data()) != string(sent.Data()) {
			t.Fatalf("event %d differs:\nsent %s\ngot  %s", i, sent, got)
		}
		if len(exts) != len(sent.Extensions()) {
			t.Fatalf("event %d extensions %v, want %v", i, exts, sent.Extensions())
		}
		for name, want := range sent.Extensions() {
			if g := exts[name]; g != want {
				t.Fatalf("event %d extension %s = %#v, want %#v", i, name, g, want)
			}
		}
	}

	// The same event sent again is a retry: stored once (its id is its Idempotency-Key).
	send(ctx, binary)
	again := newEvent("b-1")
	again.SetExtension("partitionkey", "other")
	if res := client.Send(ctx, again); !cloudevents.IsNACK(res) || !strings.Contains(res.Error(), "409") {
		t.Fatalf("another event with a used id: %v, want 409", res)
	}
	code, pr := r.Publish(t, "k", `{"n":1}`)
	if code != http.StatusAccepted || pr.EventID != "0:"+pr.ID {
		t.Fatalf("publish answered %d %+v: eventId must be the id subscribers get", code, pr)
	}
	if ce := stream.Messages(t, 1, 10*time.Second)[0].CloudEvent(t); ce.ID != pr.EventID {
		t.Fatalf("the next event is %s, want %s (the retry must not have been stored)", ce.ID, pr.EventID)
	}
}

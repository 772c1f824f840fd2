package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// channel builds a valid Durable channel and applies the modifiers to it.
func channel(ns string, mods ...func(*heraldv1.NotificationChannel)) *heraldv1.NotificationChannel {
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "ch-"},
		Spec: heraldv1.NotificationChannelSpec{
			Retention: &heraldv1.Retention{MaxLength: ptr(int64(1000))},
		},
	}
	for _, mod := range mods {
		mod(ch)
	}
	return ch
}

func ptr[T any](v T) *T { return &v }

// withEdge asks for an edge whose users' tokens are signed with the HS256 key in the Secret
// edge-keys, changed by mod.
func withEdge(mod func(*heraldv1.EdgeSpec)) func(*heraldv1.NotificationChannel) {
	return func(ch *heraldv1.NotificationChannel) {
		ch.Spec.Edge = &heraldv1.EdgeSpec{Auth: heraldv1.EdgeAuth{HMACSecretRef: &heraldv1.KeyRef{Name: "edge-keys", Key: "hmac"}}}
		if mod != nil {
			mod(ch.Spec.Edge)
		}
	}
}

func withShards(n int32) func(*heraldv1.NotificationChannel) {
	return func(ch *heraldv1.NotificationChannel) { ch.Spec.Shards = n }
}

func withDelivery(d heraldv1.DeliveryMode) func(*heraldv1.NotificationChannel) {
	return func(ch *heraldv1.NotificationChannel) { ch.Spec.Delivery = d }
}

func withRetention(r *heraldv1.Retention) func(*heraldv1.NotificationChannel) {
	return func(ch *heraldv1.NotificationChannel) { ch.Spec.Retention = r }
}

func withMaxAge(d string) func(*heraldv1.NotificationChannel) {
	return func(ch *heraldv1.NotificationChannel) {
		v, _ := time.ParseDuration(d)
		ch.Spec.Retention = &heraldv1.Retention{MaxAge: &metav1.Duration{Duration: v}}
	}
}

func withIdempotencyWindow(d string) func(*heraldv1.NotificationChannel) {
	return func(ch *heraldv1.NotificationChannel) {
		v, _ := time.ParseDuration(d)
		ch.Spec.IdempotencyWindow = &metav1.Duration{Duration: v}
	}
}

func TestValidChannelIsDefaultedAndGetsStatus(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	ch := channel(ns)
	if err := k8s.Create(ctx, ch); err != nil {
		t.Fatalf("creating a valid channel: %v", err)
	}

	// Defaults come from the CRD schema, applied by the API server.
	s := ch.Spec
	if s.Shards != 1 || s.Delivery != heraldv1.DeliveryDurable || s.MaxMessageBytes != 65536 ||
		s.Relay.Replicas == nil || *s.Relay.Replicas != 2 || s.DeletionPolicy != heraldv1.DeletionRetain {
		t.Fatalf("defaults not applied: %+v", s)
	}

	eventually(t, 20*time.Second, func() error {
		var got heraldv1.NotificationChannel
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(ch), &got); err != nil {
			return err
		}
		if !controllerutil.ContainsFinalizer(&got, heraldv1.Finalizer) {
			return fmt.Errorf("no finalizer yet: %v", got.Finalizers)
		}
		if got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", got.Status.ObservedGeneration, got.Generation)
		}
		for _, typ := range []string{heraldv1.ConditionReady, heraldv1.ConditionRedisConfigured,
			heraldv1.ConditionRelaysAvailable, heraldv1.ConditionDegraded} {
			c := meta.FindStatusCondition(got.Status.Conditions, typ)
			if c == nil {
				return fmt.Errorf("condition %s missing", typ)
			}
			if c.Reason == "" || c.Message == "" || c.ObservedGeneration != got.Generation {
				return fmt.Errorf("condition %s incomplete: %+v", typ, c)
			}
		}
		return nil
	})

	// Deleting releases the finalizer: the object goes away.
	if err := k8s.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(ch), &heraldv1.NotificationChannel{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("channel still exists (err=%v)", err)
	})
}

func TestInvalidChannelsAreRejectedNamingTheField(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	tests := map[string]struct {
		ch        *heraldv1.NotificationChannel
		wantField string // the error must name this field
		wantText  string // and say this about it
	}{
		"zero shards": {channel(ns, withShards(0)), "spec.shards", "greater than or equal to 1"},
		"65 shards":   {channel(ns, withShards(65)), "spec.shards", "less than or equal to 64"},
		"Live with retention": {channel(ns, withDelivery(heraldv1.DeliveryLive)),
			"spec", "retention is not allowed when spec.delivery is Live"},
		"Durable without retention": {channel(ns, withRetention(nil)),
			"spec", "retention is required when spec.delivery is Durable"},
		"empty retention": {channel(ns, withRetention(&heraldv1.Retention{})),
			"spec.retention", "needs maxLength, maxAge or both"},
		"zero maxLength": {channel(ns, withRetention(&heraldv1.Retention{MaxLength: ptr(int64(0))})),
			"spec.retention.maxLength", "greater than or equal to 1"},
		"maxAge under a second": {channel(ns, withMaxAge("500ms")), "spec.retention.maxAge", "at least 1s"},
		"idempotencyWindow on a Live channel": {channel(ns, withDelivery("Live"), withRetention(nil), withIdempotencyWindow("1m")),
			"spec", "idempotencyWindow is not allowed when spec.delivery is Live"},
		"idempotencyWindow past maxAge": {channel(ns, withMaxAge("10m"), withIdempotencyWindow("1h")),
			"spec", "must not be longer than spec.retention.maxAge"},
		"idempotencyWindow over a day": {channel(ns, withIdempotencyWindow("25h")), "spec.idempotencyWindow", "between 1s and 24h"},
		"maxMessageBytes too big": {channel(ns, func(ch *heraldv1.NotificationChannel) { ch.Spec.MaxMessageBytes = 16<<20 + 1 }),
			"spec.maxMessageBytes", "less than or equal to 16777216"},
		"unknown delivery": {channel(ns, withDelivery("Eventually")), "spec.delivery", `supported values: "Live", "Durable"`},
		"negative replicas": {channel(ns, func(ch *heraldv1.NotificationChannel) { ch.Spec.Relay.Replicas = ptr(int32(-1)) }),
			"spec.relay.replicas", "greater than or equal to 1"},
		"replay limit switched off": {channel(ns, func(ch *heraldv1.NotificationChannel) {
			ch.Spec.Relay.Limits = &heraldv1.RelayLimits{ReplaysPerSecondPerCaller: ptr(int32(0))}
		}), "spec.relay.limits.replaysPerSecondPerCaller", "greater than or equal to 1"},
		"bad deletionPolicy": {channel(ns, func(ch *heraldv1.NotificationChannel) { ch.Spec.DeletionPolicy = "Purge" }),
			"spec.deletionPolicy", `supported values: "Retain", "Delete"`},
		"redis without addresses": {channel(ns, func(ch *heraldv1.NotificationChannel) { ch.Spec.Redis = &heraldv1.RedisSpec{} }),
			"spec.redis.addresses", "Required value"},
		"redis address without port": {channel(ns, func(ch *heraldv1.NotificationChannel) {
			ch.Spec.Redis = &heraldv1.RedisSpec{Addresses: []string{"redis.example"}}
		}), "spec.redis.addresses[0]", "should match"},
		"name too long for its Services": {channel(ns, func(ch *heraldv1.NotificationChannel) {
			ch.GenerateName = ""
			ch.Name = strings.Repeat("a", 55)
		}), "<nil>", "metadata.name must be a DNS label of at most 54 characters"},
		"bad access namespace": {channel(ns, func(ch *heraldv1.NotificationChannel) { ch.Spec.Access.Namespaces = []string{"Team_A"} }),
			"spec.access.namespaces[0]", "should match"},
		"history too deep": {channel(ns, withRetention(&heraldv1.Retention{MaxLength: ptr(int64(10)), HistoryPerKey: 101})),
			"spec.retention.historyPerKey", "less than or equal to 100"},
		"edge without keys": {channel(ns, withEdge(func(e *heraldv1.EdgeSpec) { e.Auth = heraldv1.EdgeAuth{} })),
			"spec.edge.auth", "needs hmacSecretRef, jwksSecretRef or jwksURL"},
		"edge JWKS over plain http": {channel(ns, withEdge(func(e *heraldv1.EdgeSpec) { e.Auth.JWKSURL = "http://keys.example/jwks.json" })),
			"spec.edge.auth.jwksURL", "should match '^https://'"},
		"edge behind an Ingress and an HTTPRoute": {channel(ns, withEdge(func(e *heraldv1.EdgeSpec) {
			e.Ingress = &heraldv1.EdgeIngress{Hosts: []string{"notify.example.com"}}
			e.HTTPRoute = &heraldv1.EdgeHTTPRoute{ParentRefs: []heraldv1.GatewayRef{{Name: "public"}}}
		})), "spec.edge", "ingress and spec.edge.httpRoute are alternatives"},
		"edge Ingress host with a scheme": {channel(ns, withEdge(func(e *heraldv1.EdgeSpec) {
			e.Ingress = &heraldv1.EdgeIngress{Hosts: []string{"https://notify.example.com"}}
		})), "spec.edge.ingress.hosts[0]", "should match"},
		"edge zero replicas": {channel(ns, withEdge(func(e *heraldv1.EdgeSpec) { e.Replicas = ptr(int32(0)) })),
			"spec.edge.replicas", "greater than or equal to 1"},
		"edge HMAC Secret without a key": {channel(ns, withEdge(func(e *heraldv1.EdgeSpec) { e.Auth.HMACSecretRef.Key = "" })),
			"spec.edge.auth.hmacSecretRef.key", "at least 1 chars long"},
	}
	// Edits made to the object as kubectl would send it: the typed client omits a zero shards.
	raw := map[string]func(spec map[string]any){
		"zero shards": func(spec map[string]any) { spec["shards"] = int64(0) },
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tc.ch)
			if err != nil {
				t.Fatal(err)
			}
			if edit := raw[name]; edit != nil {
				edit(obj["spec"].(map[string]any))
			}
			u := &unstructured.Unstructured{Object: obj}
			u.SetGroupVersionKind(heraldv1.GroupVersion.WithKind("NotificationChannel"))
			err = k8s.Create(ctx, u)
			if err == nil {
				t.Fatalf("the API server accepted an invalid channel: %+v", tc.ch.Spec)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.wantField+":") || !strings.Contains(msg, tc.wantText) {
				t.Fatalf("error does not name %q and say %q:\n%s", tc.wantField, tc.wantText, msg)
			}
		})
	}
}

func TestShardsAreImmutable(t *testing.T) {
	ctx := context.Background()
	ch := channel(newNamespace(t), withShards(3))
	if err := k8s.Create(ctx, ch); err != nil {
		t.Fatal(err)
	}
	orig := ch.DeepCopy()
	ch.Spec.Shards = 4
	err := k8s.Patch(ctx, ch, client.MergeFrom(orig))
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.shards: Invalid value") ||
		!strings.Contains(err.Error(), "spec.shards is immutable") {
		t.Fatalf("changing shards: want an Invalid error naming spec.shards, got %v", err)
	}
	// Other fields stay editable.
	var fresh heraldv1.NotificationChannel
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(ch), &fresh); err != nil {
		t.Fatal(err)
	}
	orig = fresh.DeepCopy()
	fresh.Spec.MaxMessageBytes = 1024
	if err := k8s.Patch(ctx, &fresh, client.MergeFrom(orig)); err != nil {
		t.Fatalf("changing maxMessageBytes: %v", err)
	}
}

func TestCRDHasPrinterColumnsAndShortName(t *testing.T) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: "notificationchannels.notifications.herald.dev"}, &crd); err != nil {
		t.Fatal(err)
	}
	if got := crd.Spec.Names.ShortNames; len(got) != 1 || got[0] != "nch" {
		t.Fatalf("short names %v, want [nch]", got)
	}
	want := map[string]string{
		"Shards":   ".spec.shards",
		"Delivery": ".spec.delivery",
		"Ready":    `.status.conditions[?(@.type=="Ready")].status`,
		"Reason":   `.status.conditions[?(@.type=="Ready")].reason`,
		"Age":      ".metadata.creationTimestamp",
		"Endpoint": ".status.endpoint",                               // -o wide
		"Message":  `.status.conditions[?(@.type=="Ready")].message`, // -o wide
	}
	cols := crd.Spec.Versions[0].AdditionalPrinterColumns
	if len(cols) != len(want) {
		t.Fatalf("printer columns %+v, want %v", cols, want)
	}
	for _, c := range cols {
		if want[c.Name] != c.JSONPath {
			t.Errorf("column %s has JSONPath %q, want %q", c.Name, c.JSONPath, want[c.Name])
		}
		if wide := c.Name == "Endpoint" || c.Name == "Message"; wide != (c.Priority > 0) {
			t.Errorf("column %s has priority %d: only Endpoint and Message are for -o wide", c.Name, c.Priority)
		}
	}
	// kubectl explain documents every field: no property of the schema lacks a description.
	var undocumented []string
	var walk func(path string, p apiextensionsv1.JSONSchemaProps)
	walk = func(path string, p apiextensionsv1.JSONSchemaProps) {
		for name, child := range p.Properties {
			if child.Description == "" && !strings.HasPrefix(path+"."+name, ".metadata") &&
				path+"."+name != ".apiVersion" && path+"."+name != ".kind" {
				undocumented = append(undocumented, path+"."+name)
			}
			walk(path+"."+name, child)
		}
		if p.Items != nil && p.Items.Schema != nil {
			walk(path+"[]", *p.Items.Schema)
		}
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	walk("", *spec)
	if len(undocumented) > 0 {
		t.Fatalf("fields without a description (kubectl explain shows nothing): %v", undocumented)
	}
}

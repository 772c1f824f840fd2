package controllers

import (
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/relay/shardmap"
)

// Only Herald's libraries of other versions are candidates: never this version's, never
// someone else's.
func TestEarlierLibrariesAreHeraldsOthers(t *testing.T) {
	got := earlierLibraries(map[string]bool{
		shardmap.PublishLibraryName: true, "herald": true, "herald_0badc0de": true, "mylib": true, "heraldry": true,
	})
	if want := []string{"herald", "herald_0badc0de"}; !slices.Equal(got, want) {
		t.Errorf("earlierLibraries = %v, want %v", got, want)
	}
}

func TestRolledOutNeedsEveryPodOnTheImage(t *testing.T) {
	dep := func(image string, gen, observed int64, replicas, updated int32) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Generation: gen},
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "relay", Image: image}}}}},
			Status: appsv1.DeploymentStatus{ObservedGeneration: observed, Replicas: replicas, UpdatedReplicas: updated},
		}
	}
	for _, c := range []struct {
		name string
		d    *appsv1.Deployment
		ok   bool
	}{
		{"rolled out", dep("herald:new", 2, 2, 2, 2), true},
		{"another image (spec.relay.image, or an earlier operator's template)", dep("herald:old", 2, 2, 2, 2), false},
		{"a change not yet seen by the Deployment controller", dep("herald:new", 3, 2, 2, 2), false},
		{"old pods left (a rollout in progress)", dep("herald:new", 2, 2, 3, 2), false},
	} {
		if got := rolledOut(c.d, "herald:new"); (got == "") != c.ok {
			t.Errorf("%s: rolledOut = %q", c.name, got)
		}
	}
}

// A library goes only after it has been unused for the whole wait, counted from the first pass
// that found it unused; a pass that finds a relay of another version starts the clock again.
func TestTheJanitorWaitsForAWholePeriodUnused(t *testing.T) {
	var j libraryJanitor
	t0 := time.Unix(1000, 0)
	const wait = 10 * time.Minute
	if due := j.unused("r", []string{"herald"}, t0, wait); len(due) != 0 {
		t.Fatalf("due at once: %v", due)
	}
	if due := j.unused("r", []string{"herald"}, t0.Add(wait-time.Second), wait); len(due) != 0 {
		t.Fatalf("due before the wait: %v", due)
	}
	j.reset("r") // a rollback began
	if due := j.unused("r", []string{"herald"}, t0.Add(wait), wait); len(due) != 0 {
		t.Fatalf("due right after a reset: %v", due)
	}
	if due := j.unused("r", []string{"herald"}, t0.Add(2*wait), wait); !slices.Equal(due, []string{"herald"}) {
		t.Fatalf("due after a whole period unused: %v", due)
	}
	if !j.due("r", t0, 30*time.Second) || j.due("r", t0.Add(10*time.Second), 30*time.Second) || !j.due("r", t0.Add(31*time.Second), 30*time.Second) {
		t.Error("passes are not spaced by the interval")
	}
}

// Channels share a Redis when their passes found a node in common, whatever addresses or
// credentials they reach it by; a channel not seen yet stops the janitor.
func TestChannelsShareARedisByItsNodes(t *testing.T) {
	var j libraryJanitor
	chs := []heraldv1.NotificationChannel{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "x"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "y"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "c", Name: "z"}},
	}
	j.saw(key(chs[0]), []redisconf.Node{{Addr: "10.0.0.1:6379"}, {Addr: "10.0.0.2:6379"}})
	j.saw(key(chs[1]), []redisconf.Node{{Addr: "10.0.0.2:6379"}}) // a failover later: one node in common
	if _, unseen := j.sharing(chs, []string{"10.0.0.1:6379"}); unseen != "c/z" {
		t.Fatalf("unseen = %q, want c/z", unseen)
	}
	j.saw(key(chs[2]), []redisconf.Node{{Addr: "10.9.0.1:6379"}}) // another Redis
	on, unseen := j.sharing(chs, []string{"10.0.0.1:6379", "10.0.0.2:6379"})
	if unseen != "" || len(on) != 2 || on[0].Name != "x" || on[1].Name != "y" {
		t.Errorf("sharing = %v %q, want a/x and b/y", on, unseen)
	}
	j.forget(key(chs[2]))
	if _, unseen := j.sharing(chs, nil); unseen != "c/z" {
		t.Errorf("a forgotten channel still counts as seen")
	}
}

func key(ch heraldv1.NotificationChannel) types.NamespacedName {
	return types.NamespacedName{Namespace: ch.Namespace, Name: ch.Name}
}

package redisconf

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/shardmap"
)

// An upgrade loads the new version's publish function beside the previous version's, which
// relays that have not rolled yet still call: with one library name for every version (and
// FUNCTION LOAD REPLACE) the previous function vanished, and every old relay's publish failed
// until it rolled. A master that lost the function gets it back, once.
func TestTheNewFunctionLoadsBesideThePreviousVersions(t *testing.T) {
	ctx := context.Background()
	admin := NewConn(Options{Addrs: seeds()})
	defer admin.Close()
	_, nodes, err := admin.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The previous version's library, under the name every version used to share.
	prevLib, prevFn := "herald", strings.ReplaceAll(unique("herald_publish_prev"), "-", "_") // a function name holds no dash
	prevCode := "#!lua name=" + prevLib + "\nredis.register_function{function_name='" + prevFn +
		"', callback=function(keys, args) return 'previous' end, flags={'no-writes'}}\n"
	masters := 0
	for _, nd := range nodes {
		if nd.Master && !nd.Failed() {
			masters++
			n := admin.node(nd.Addr)
			if err := n.FunctionLoadReplace(ctx, prevCode).Err(); err != nil {
				t.Fatal(err)
			}
			defer n.FunctionDelete(ctx, prevLib) //nolint:errcheck // cleanup of the test's library
		}
	}

	admin.EnsureFunction(ctx, nodes, shardmap.PublishFunction, shardmap.PublishLibraryName, shardmap.PublishLibrary)
	for _, nd := range nodes {
		if !nd.Master || nd.Failed() {
			continue
		}
		n := admin.node(nd.Addr)
		libs, err := n.FunctionList(ctx, redis.FunctionListQuery{}).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !holds(libs, shardmap.PublishFunction) || !holds(libs, prevFn) {
			t.Errorf("master %s: libraries %v; want this version's %s beside the previous %s", nd.Addr, names(libs), shardmap.PublishLibraryName, prevLib)
		}
		if got, err := n.FCallRO(ctx, prevFn, nil).Text(); err != nil || got != "previous" {
			t.Errorf("master %s: the previous version's function after the upgrade: %q %v", nd.Addr, got, err)
		}
	}
	// Steady state writes nothing; a master that lost the function gets it back.
	if written, lagging := admin.EnsureFunction(ctx, nodes, shardmap.PublishFunction, shardmap.PublishLibraryName, shardmap.PublishLibrary); len(written) != 0 || len(lagging) != 0 {
		t.Errorf("a second pass wrote to %v (lagging %v); want nothing", written, lagging)
	}
	var first Node
	for _, nd := range nodes {
		if nd.Master && !nd.Failed() {
			first = nd
			break
		}
	}
	if err := admin.node(first.Addr).FunctionDelete(ctx, shardmap.PublishLibraryName).Err(); err != nil {
		t.Fatal(err)
	}
	// (A relay test running meanwhile may load it back first: then the pass has nothing to do.)
	written, _ := admin.EnsureFunction(ctx, nodes, shardmap.PublishFunction, shardmap.PublishLibraryName, shardmap.PublishLibrary)
	libs, err := admin.node(first.Addr).FunctionList(ctx, redis.FunctionListQuery{}).Result()
	if err != nil || !holds(libs, shardmap.PublishFunction) || len(written) > 1 || (len(written) == 1 && written[0] != first.Addr) {
		t.Errorf("after %s lost the function the pass wrote to %v and it holds %v (%v); want it back, written there only", first.Addr, written, names(libs), err)
	}
	if masters < 3 {
		t.Errorf("%d masters, want the test cluster's 3", masters)
	}
}

func names(libs []redis.Library) []string {
	var n []string
	for _, l := range libs {
		n = append(n, l.Name)
	}
	return n
}

// An earlier version's library is listed, then removed from every master; removing it again
// (another pass, a master that never had it) is no error.
func TestAnEarlierLibraryIsListedAndRemoved(t *testing.T) {
	ctx := context.Background()
	admin := NewConn(Options{Addrs: seeds()})
	defer admin.Close()
	_, nodes, err := admin.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lib := shardmap.LibraryPrefix + strings.ReplaceAll(unique("earlier"), "-", "_")
	code := "#!lua name=" + lib + "\nredis.register_function{function_name='" + lib +
		"_fn', callback=function(keys, args) return 'earlier' end, flags={'no-writes'}}\n"
	for _, nd := range nodes {
		if nd.Master && !nd.Failed() {
			n := admin.node(nd.Addr)
			if err := n.FunctionLoadReplace(ctx, code).Err(); err != nil {
				t.Fatal(err)
			}
			defer n.FunctionDelete(ctx, lib) //nolint:errcheck // cleanup when the test fails first
		}
	}
	libs, err := admin.FunctionLibraries(ctx, nodes)
	if err != nil || !libs[lib] {
		t.Fatalf("FunctionLibraries: %v (%v), want %s among them", libs, err, lib)
	}
	for range 2 {
		if err := admin.DeleteFunctionLibrary(ctx, nodes, lib); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes {
		if !nd.Master || nd.Failed() {
			continue
		}
		got, err := admin.node(nd.Addr).FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: lib}).Result()
		if err != nil || len(got) != 0 {
			t.Errorf("master %s still holds %v (%v)", nd.Addr, names(got), err)
		}
	}
}

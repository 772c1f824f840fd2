package localstack

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// NewClient is a direct (uncached) client of cfg that knows the built-in and Herald's types.
func NewClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(heraldv1.AddToScheme(scheme))
	return client.New(cfg, client.Options{Scheme: scheme})
}

// WaitChannelReady polls a NotificationChannel until its Ready condition is True for its
// current generation, and returns it; on timeout the error quotes the last Ready condition.
func WaitChannelReady(parent context.Context, c client.Client, key client.ObjectKey, within time.Duration) (*heraldv1.NotificationChannel, error) {
	ctx, cancel := context.WithTimeout(parent, within)
	defer cancel()
	last := "not found yet"
	for {
		var ch heraldv1.NotificationChannel
		if err := c.Get(ctx, key, &ch); err == nil {
			cond := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionReady)
			if cond != nil && cond.Status == "True" && cond.ObservedGeneration == ch.Generation {
				return &ch, nil
			}
			if cond != nil {
				last = fmt.Sprintf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if err := context.Cause(parent); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("channel %s is not Ready after %s: %s", key, within, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ReadyAddrs are the addresses of the ready replicas of one Deployment.
func (r *Runner) ReadyAddrs(namespace, deployment string) []string {
	var out []string
	for _, rep := range r.Replicas() {
		if rep.Namespace == namespace && rep.Deployment == deployment && rep.Ready {
			out = append(out, rep.Addr)
		}
	}
	return out
}

// fileLogf appends timestamped lines to path.
func fileLogf(path string) func(format string, args ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
			f.Close()
		}
	}
}

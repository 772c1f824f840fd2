package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// BenchmarkThousandChannels creates 1,000 channels at once on the real Redis Cluster and reports
// how long until all of them are RedisConfigured, reconciles per second and API writes per
// channel; then deletes them (deletionPolicy Delete) and reports how long that took.
//
//	go test -run '^$' -bench ThousandChannels -benchtime 1x ./controllers/
func BenchmarkThousandChannels(b *testing.B) {
	const channels = 1000
	ctx := context.Background()
	for range b.N {
		ns := newNamespace(b)
		writes0 := apiWrites.n.Load()
		start := time.Now()
		for i := range channels {
			ch := channel(ns, func(c *heraldv1.NotificationChannel) {
				c.GenerateName = ""
				c.Name = fmt.Sprintf("bench-%04d", i)
				c.Spec.DeletionPolicy = heraldv1.DeletionDelete
			})
			if err := k8s.Create(ctx, ch); err != nil {
				b.Fatal(err)
			}
		}
		created := time.Since(start)
		reconciles0 := sumReconciles(ns)
		if err := waitAll(ctx, ns, channels, 10*time.Minute); err != nil {
			b.Fatal(err)
		}
		configured := time.Since(start)
		passes := sumReconciles(ns) - reconciles0
		writes := apiWrites.n.Load() - writes0

		var list heraldv1.NotificationChannelList
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		delStart := time.Now()
		for i := range list.Items {
			if err := k8s.Delete(ctx, &list.Items[i]); err != nil {
				b.Fatal(err)
			}
		}
		deadline := time.Now().Add(10 * time.Minute)
		for {
			if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
				b.Fatal(err)
			}
			if len(list.Items) == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d channels not released after 10 minutes", len(list.Items))
			}
			time.Sleep(200 * time.Millisecond)
		}
		b.ReportMetric(created.Seconds(), "s-to-create")
		b.ReportMetric(configured.Seconds(), "s-to-configured")
		b.ReportMetric(float64(passes)/configured.Seconds(), "reconciles/s")
		b.ReportMetric(float64(writes)/channels, "api-writes/channel")
		b.ReportMetric(time.Since(delStart).Seconds(), "s-to-delete")
	}
}

func sumReconciles(ns string) int {
	reconciles.mu.Lock()
	defer reconciles.mu.Unlock()
	n := 0
	for k, v := range reconciles.n {
		if k.Namespace == ns {
			n += v
		}
	}
	return n
}

func waitAll(ctx context.Context, ns string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var list heraldv1.NotificationChannelList
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		n := 0
		for _, ch := range list.Items {
			if meta.IsStatusConditionTrue(ch.Status.Conditions, heraldv1.ConditionRedisConfigured) {
				n++
			}
		}
		if n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d channels RedisConfigured after %s", n, want, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

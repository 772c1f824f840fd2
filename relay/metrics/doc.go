// Package metrics defines the relay's Prometheus metrics, registered on a registry the caller
// owns (never the global one), so several relays can live in one test process.
//
// Counters that the hub already keeps as atomics (subscribers, deliveries, slow consumers) are
// read at scrape time through CounterFunc/GaugeFunc: the hot path updates one atomic per
// broadcast, not one Prometheus counter per subscriber.
package metrics

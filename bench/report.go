package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Row is one line of the table: one scenario measured on one path.
type Row struct {
	Scenario    string  `json:"scenario"`
	Path        string  `json:"path"` // herald (shard relay), sidecar (app -> sidecar -> shard relay), raw redis
	Subscribers int     `json:"subscribers"`
	Offered     float64 `json:"offered"`  // messages/s offered (fan-out) or concurrent publishers (publish)
	Achieved    float64 `json:"achieved"` // deliveries/s (fan-out) or acknowledged publishes/s (publish)
	Unit        string  `json:"unit"`
	ServerCPU   float64 `json:"serverCPUSeconds"`    // relay (+ sidecar), or the Redis master for raw rows
	RedisCPU    float64 `json:"redisCPUSeconds"`     // the shard's Redis master, every row
	CPUPerM     float64 `json:"serverCPUPerMillion"` // ServerCPU per 1M deliveries / publishes
	PerCore     float64 `json:"perCoreSecond"`       // deliveries or publishes per server CPU second
	Ratio       float64 `json:"ratioVsBaseline"`     // PerCore / the baseline's PerCore (0 = none)
	P50         float64 `json:"p50ms"`
	P90         float64 `json:"p90ms"`
	P99         float64 `json:"p99ms"`
	Max         float64 `json:"maxms"`
	Lost        int64   `json:"lost"` // acknowledged (message, subscriber) pairs not delivered
	Dup         int64   `json:"duplicated"`
	OOO         int64   `json:"outOfOrder"`
	Slow        int64   `json:"slowConsumersClosed"`
	Gaps        int64   `json:"gapEvents"`
	RedisSubs   int64   `json:"redisSubscriptionsPerShard"` // -1 = not measured
	RSSPerSub   float64 `json:"rssPerSubscriberKiB"`
	Recovery    float64 `json:"recoverySeconds"`   // slowest subscriber; -1 = never within the window
	LoadgenCPU  float64 `json:"loadgenCPUPercent"` // of one core
	Note        string  `json:"note"`
}

// Report is the JSON file.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"durationNs"`
	Cores    int           `json:"cores"`
	Scaled   []string      `json:"scaledDown,omitempty"`
	Rows     []Row         `json:"rows"`
}

func f1(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func count(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// WriteMarkdown prints the table.
func (rep *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| scenario | path | subs | offered | achieved | server CPU s / 1M | per CPU-s | vs raw | p50 ms | p90 | p99 | max | lost | dup | ooo | Redis subs/shard | RSS/sub KiB | recovery s | loadgen CPU | note |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range rep.Rows {
		dash := func(ok bool, s string) string {
			if !ok {
				return "–"
			}
			return s
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Scenario, r.Path, dash(r.Subscribers > 0, count(float64(r.Subscribers))),
			dash(r.Offered > 0, count(r.Offered)), dash(r.Achieved > 0, count(r.Achieved)+" "+r.Unit),
			dash(r.CPUPerM > 0, f1(r.CPUPerM)), dash(r.PerCore > 0, count(r.PerCore)), dash(r.Ratio > 0, fmt.Sprintf("%.2fx", r.Ratio)),
			dash(r.P99 > 0, f1(r.P50)), dash(r.P99 > 0, f1(r.P90)), dash(r.P99 > 0, f1(r.P99)), dash(r.P99 > 0, f1(r.Max)),
			dash(r.Unit != "", fmt.Sprint(r.Lost)), dash(r.Unit != "", fmt.Sprint(r.Dup)), dash(r.Unit != "", fmt.Sprint(r.OOO)),
			dash(r.RedisSubs >= 0, fmt.Sprint(r.RedisSubs)), dash(r.RSSPerSub > 0, f1(r.RSSPerSub)),
			dash(r.Recovery != 0, recovery(r.Recovery)), dash(r.LoadgenCPU > 0, fmt.Sprintf("%.0f%%", r.LoadgenCPU)),
			strings.ReplaceAll(r.Note, "|", "/"))
	}
}

func recovery(v float64) string {
	if v < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2f", v)
}

// WriteJSON writes the report to path.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Package flowlog writes flow log records as JSON lines, rate-limited.
package flowlog

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Record is one flow log line.
type Record struct {
	Time      time.Time `json:"time"`
	Verdict   string    `json:"verdict"`   // "allow" or "deny"
	Direction string    `json:"direction"` // "ingress" or "egress", relative to the pod
	Namespace string    `json:"namespace,omitempty"`
	Pod       string    `json:"pod,omitempty"`
	PodIP     string    `json:"podIP,omitempty"`
	Peer      string    `json:"peer"`
	Port      uint16    `json:"port,omitempty"` // destination port
	Protocol  string    `json:"protocol"`
	Policy    string    `json:"policy,omitempty"` // namespace/name of the deciding policy
	Reason    string    `json:"reason,omitempty"`
}

// Writer writes at most a configured number of records per second and
// counts the ones it drops.
type Writer struct {
	mu      sync.Mutex
	out     io.Writer
	limiter *rate.Limiter
	dropped uint64
	written uint64
}

// New writes to out at most perSecond records per second on average, with
// bursts of up to one second's worth.
func New(out io.Writer, perSecond float64) *Writer {
	burst := int(perSecond)
	if burst < 1 {
		burst = 1
	}
	return &Writer{out: out, limiter: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// Write writes r as one JSON line, unless the rate is exceeded; it tells
// whether r was written.
func (w *Writer) Write(r Record) (bool, error) {
	if !w.limiter.Allow() {
		w.mu.Lock()
		w.dropped++
		w.mu.Unlock()
		return false, nil
	}
	line, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	line = append(line, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.out.Write(line); err != nil {
		return false, err
	}
	w.written++
	return true, nil
}

// Counts returns how many records were written and dropped.
func (w *Writer) Counts() (written, dropped uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written, w.dropped
}

// Open opens a flow log destination: "-" (or "true") is standard output,
// anything else a file appended to (created if missing). The closer is a
// no-op for standard output.
func Open(dest string) (io.WriteCloser, error) {
	if dest == "-" || dest == "true" {
		return nopCloser{os.Stdout}, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("flow log: %w", err)
	}
	return f, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

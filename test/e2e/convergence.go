package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"
)

// convergence collects, per kind of change (create, update, delete,
// label), the time from the API call to the first confirmed probe round
// that showed the expected traffic.
type convergence struct {
	mu      sync.Mutex
	samples map[string][]time.Duration
	// interrupted counts pairs meant to stay connected through a change
	// that a probe round saw blocked, and steps with at least one; the
	// same split by whether any NetworkPolicy existed before the step.
	interrupted, interruptedSteps int
	split                         map[bool]*Interruptions
}

// Interruptions counts pairs meant to stay connected seen blocked, and the
// steps where it happened.
type Interruptions struct {
	Pairs int `json:"pairs"`
	Steps int `json:"steps"`
}

// interruptions records a step's blocked pairs; policiesBefore tells
// whether some NetworkPolicy existed before the step's change (otherwise
// the change isolated pods that were open).
func (c *convergence) interruptions(pairs int, policiesBefore bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.split == nil {
		c.split = map[bool]*Interruptions{false: {}, true: {}}
	}
	c.interrupted += pairs
	c.split[policiesBefore].Pairs += pairs
	if pairs > 0 {
		c.interruptedSteps++
		c.split[policiesBefore].Steps++
	}
}

func (c *convergence) record(kind string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.samples == nil {
		c.samples = map[string][]time.Duration{}
	}
	c.samples[kind] = append(c.samples[kind], d)
}

// Summary is one group of samples.
type Summary struct {
	Samples int     `json:"samples"`
	P50ms   float64 `json:"p50_ms"`
	P90ms   float64 `json:"p90_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// Report is what results/convergence.json holds.
type Report struct {
	Measured    string             `json:"measured"`
	Method      string             `json:"method"`
	PollTimeout string             `json:"probe_poll_timeout"`
	All         Summary            `json:"all"`
	ByKind      map[string]Summary `json:"by_kind"`
	// InterruptedPairs counts (pair, port, family) probes meant to stay
	// connected through a change but seen blocked during it.
	InterruptedPairs int `json:"interrupted_pairs"`
	InterruptedSteps int `json:"interrupted_steps"`
	// InterruptedFromOpen are those of steps that started with no
	// NetworkPolicy (the first policies of a case isolate open pods: until
	// the controller's rules arrive, the agent isolates the pods they
	// select with nothing allowed); InterruptedReplacing those of steps
	// that changed existing policies (or added to them).
	InterruptedFromOpen  Interruptions `json:"interrupted_from_open"`
	InterruptedReplacing Interruptions `json:"interrupted_replacing"`
}

func summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Summary{
		Samples: len(sorted),
		P50ms:   ms(percentile(sorted, 50)),
		P90ms:   ms(percentile(sorted, 90)),
		P99ms:   ms(percentile(sorted, 99)),
		MaxMs:   ms(sorted[len(sorted)-1]),
	}
}

// percentile is the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func (c *convergence) report(pollTimeout time.Duration) Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := Report{
		Measured:         time.Now().UTC().Format(time.RFC3339),
		Method:           "time from the API call (create/update/delete of a NetworkPolicy, pod or namespace relabel) to the start of the first probe round (100 ms probe timeout) that observed the expected matrix, its blocked pairs confirmed with a 1 s timeout; one controller and two agents (two simulated nodes, dual-stack) on a 2-core VM shared with other work",
		PollTimeout:      pollTimeout.String(),
		ByKind:           map[string]Summary{},
		InterruptedPairs: c.interrupted,
		InterruptedSteps: c.interruptedSteps,
	}
	if c.split != nil {
		r.InterruptedFromOpen, r.InterruptedReplacing = *c.split[false], *c.split[true]
	}
	var all []time.Duration
	kinds := make([]string, 0, len(c.samples))
	for kind := range c.samples {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		r.ByKind[kind] = summarize(c.samples[kind])
		all = append(all, c.samples[kind]...)
	}
	r.All = summarize(all)
	return r
}

func (r Report) String() string {
	s := fmt.Sprintf("convergence: %d samples, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; %d probes meant to stay connected seen blocked, in %d steps (%d in %d steps starting without policies, %d in %d steps changing policies)",
		r.All.Samples, r.All.P50ms, r.All.P90ms, r.All.P99ms, r.All.MaxMs, r.InterruptedPairs, r.InterruptedSteps,
		r.InterruptedFromOpen.Pairs, r.InterruptedFromOpen.Steps, r.InterruptedReplacing.Pairs, r.InterruptedReplacing.Steps)
	for kind, k := range r.ByKind {
		s += fmt.Sprintf("\n  %-7s %3d samples, p50 %.1f ms, p99 %.1f ms, max %.1f ms", kind, k.Samples, k.P50ms, k.P99ms, k.MaxMs)
	}
	return s
}

func writeReport(path string, r Report) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Package regress decides whether a run regressed: it compares every
// gating same-run ratio with the committed baseline and with its target,
// each with a stated relative tolerance. Absolute times never gate.
package regress

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/palisade-net/palisade/bench/result"
)

// DefaultTolerance lets a ratio be 25% worse than its baseline or target
// before the check fails.
const DefaultTolerance = 0.25

// Baseline is the committed reference: the gating ratios of an accepted
// run, keyed by measurement name, and the tolerances they are held to.
type Baseline struct {
	// Tolerance applies to every ratio no entry of Tolerances covers.
	Tolerance float64 `json:"tolerance"`
	// Tolerances overrides Tolerance for measurements whose name starts
	// with the key (the longest matching key wins): wider for ratios that
	// the machine's load moves more, such as the control plane's.
	Tolerances map[string]float64 `json:"tolerances,omitempty"`
	Ratios     map[string]float64 `json:"ratios"`
}

// ToleranceOf returns the tolerance that applies to the named measurement.
func (b *Baseline) ToleranceOf(name string) float64 {
	if b == nil {
		return DefaultTolerance
	}
	tolerance, longest := b.Tolerance, -1
	for prefix, t := range b.Tolerances {
		if strings.HasPrefix(name, prefix) && len(prefix) > longest {
			tolerance, longest = t, len(prefix)
		}
	}
	return tolerance
}

// ReadBaseline reads bench/baseline.json.
func ReadBaseline(path string) (*Baseline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("regress: %w", err)
	}
	var b Baseline
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("regress: decode %s: %w", path, err)
	}
	if b.Tolerance <= 0 || b.Tolerance >= 1 {
		return nil, fmt.Errorf("regress: %s: tolerance %v must be between 0 and 1 exclusive", path, b.Tolerance)
	}
	for prefix, t := range b.Tolerances {
		if t <= 0 || t > 10 {
			return nil, fmt.Errorf("regress: %s: tolerance %v of %q must be above 0 and at most 10", path, t, prefix)
		}
	}
	for name, ratio := range b.Ratios {
		if ratio <= 0 {
			return nil, fmt.Errorf("regress: %s: ratio of %s is %v, must be positive", path, name, ratio)
		}
	}
	return &b, nil
}

// WriteBaseline writes b to path, keys sorted.
func WriteBaseline(path string, b *Baseline) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return fmt.Errorf("regress: encode baseline: %w", err)
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// BaselineOf takes the gating ratios of run as a new baseline, with the
// tolerances of keep. Unless complete (a full run, which measures every
// ratio), ratios of keep that run lacks are carried over, so a short run
// never erases what only a full run measures; a complete run drops them.
func BaselineOf(run *result.Run, tolerance float64, keep *Baseline, complete bool) *Baseline {
	b := &Baseline{Tolerance: tolerance, Ratios: map[string]float64{}}
	if keep != nil {
		if !complete {
			maps.Copy(b.Ratios, keep.Ratios)
		}
		if len(keep.Tolerances) > 0 {
			b.Tolerances = maps.Clone(keep.Tolerances)
		}
	}
	for _, m := range run.Measurements {
		for _, metric := range m.Metrics {
			if metric.Gate {
				b.Ratios[m.Name] = metric.Value
			}
		}
	}
	return b
}

// Finding is one gating ratio and how it compares.
type Finding struct {
	Name     string
	Ratio    float64
	Baseline float64 // 0 when the baseline has no entry
	Target   *result.Limit
	// Tolerance is the one the ratio was held to.
	Tolerance float64
	// Regressed: worse than the baseline beyond the tolerance.
	// MissedTarget: worse than the target (no tolerance: targets do
	// not gate, so they are shown exactly).
	Regressed, MissedTarget bool
	// Problems says why the ratio regressed; empty when it did not.
	Problems []string
	// TargetMiss says how the ratio misses its target. Reported, never
	// failing: only a regression against the baseline fails a run.
	TargetMiss string
}

// Failed reports whether the finding fails the check.
func (f Finding) Failed() bool { return len(f.Problems) > 0 }

// Check compares every gating ratio of run with baseline (which may be nil)
// and with its target. A ratio fails when it is worse than the baseline by
// more than its tolerance; missing its target at all is recorded in
// TargetMiss. "Worse" is "higher" unless the target says higher
// is better.
func Check(run *result.Run, baseline *Baseline) []Finding {
	var findings []Finding
	for _, m := range run.Measurements {
		for _, metric := range m.Metrics {
			if !metric.Gate {
				continue
			}
			tolerance := baseline.ToleranceOf(m.Name)
			f := Finding{Name: m.Name, Ratio: metric.Value, Target: metric.Target, Tolerance: tolerance}
			if baseline != nil {
				f.Baseline = baseline.Ratios[m.Name]
			}
			if f.Baseline > 0 {
				limit := result.AtMost(f.Baseline)
				if metric.Target.HigherIsBetter() {
					limit = result.AtLeast(f.Baseline)
				}
				if !limit.Met(metric.Value, tolerance) {
					f.Regressed = true
					f.Problems = append(f.Problems, fmt.Sprintf("%.3g is more than %.0f%% worse than the baseline %.3g", metric.Value, tolerance*100, f.Baseline))
				}
			}
			if !metric.Target.Met(metric.Value, 0) {
				f.MissedTarget = true
				f.TargetMiss = fmt.Sprintf("%.3g misses the target %s", metric.Value, metric.Target)
			}
			findings = append(findings, f)
		}
	}
	return findings
}

// Failures returns the failing findings.
func Failures(findings []Finding) []Finding {
	var failed []Finding
	for _, f := range findings {
		if f.Failed() {
			failed = append(failed, f)
		}
	}
	return failed
}

// Explain formats failing findings one per line, sorted by name.
func Explain(findings []Finding) string {
	lines := make([]string, 0, len(findings))
	for _, f := range Failures(findings) {
		lines = append(lines, f.Name+": "+strings.Join(f.Problems, "; "))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

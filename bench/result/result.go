// Package result holds the measurements of one benchmark run and writes
// them as JSON and in the Go benchmark text format that benchstat reads.
package result

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RatioUnit is the unit of a same-run ratio, the only kind of value the
// regression check gates on.
const RatioUnit = "ratio"

// Limit is a target a metric should meet. Exactly one of Max and Min is
// set: Max for "lower is better" values, Min for "higher is better".
type Limit struct {
	Max *float64 `json:"max,omitempty"`
	Min *float64 `json:"min,omitempty"`
}

// AtMost is a Limit for lower-is-better values.
func AtMost(v float64) *Limit { return &Limit{Max: &v} }

// AtLeast is a Limit for higher-is-better values.
func AtLeast(v float64) *Limit { return &Limit{Min: &v} }

// HigherIsBetter tells the direction the limit implies.
func (l *Limit) HigherIsBetter() bool { return l != nil && l.Min != nil }

// Met reports whether v satisfies the limit, allowing a relative tolerance
// (0.25 lets v be 25% worse than the limit).
func (l *Limit) Met(v, tolerance float64) bool {
	if l == nil {
		return true
	}
	if l.Max != nil && v > *l.Max*(1+tolerance) {
		return false
	}
	if l.Min != nil && v < *l.Min*(1-tolerance) {
		return false
	}
	return true
}

func (l *Limit) String() string {
	switch {
	case l == nil:
		return ""
	case l.Max != nil:
		return fmt.Sprintf("<= %g", *l.Max)
	case l.Min != nil:
		return fmt.Sprintf(">= %g", *l.Min)
	}
	return ""
}

// Metric is one value of a measurement. Gate marks a same-run ratio the
// regression check compares with the baseline and with Target; other
// metrics are reported only. Samples, when there are several, are the
// per-round values Value summarizes; the benchmark text repeats the line
// once per sample so that benchstat sees the spread.
type Metric struct {
	Value   float64   `json:"value"`
	Unit    string    `json:"unit"`
	Target  *Limit    `json:"target,omitempty"`
	Gate    bool      `json:"gate,omitempty"`
	Samples []float64 `json:"samples,omitempty"`
}

// Measurement is one benchmark: a name in benchstat form without the
// "Benchmark" prefix ("HotPath/established/ipv4/cidrs=1000"), how many
// iterations it averaged, and its metrics in print order.
type Measurement struct {
	Name       string   `json:"name"`
	Iterations int      `json:"iterations"`
	Metrics    []Metric `json:"metrics"`
}

// Metric returns the metric with the given unit.
func (m *Measurement) Metric(unit string) (Metric, bool) {
	for _, metric := range m.Metrics {
		if metric.Unit == unit {
			return metric, true
		}
	}
	return Metric{}, false
}

// Group is the first element of the name ("HotPath", "Traffic", ...).
func (m *Measurement) Group() string {
	group, _, _ := strings.Cut(m.Name, "/")
	return group
}

// Run is every measurement of one invocation and where it ran.
type Run struct {
	Mode         string            `json:"mode"`
	Started      time.Time         `json:"started"`
	Environment  map[string]string `json:"environment"`
	Measurements []Measurement     `json:"measurements"`
	// Skipped names parts that could not run, with the reason.
	Skipped map[string]string `json:"skipped,omitempty"`
}

var (
	validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./=:+-]*$`)
	validUnit = regexp.MustCompile(`^[A-Za-z0-9_/%.-]+$`)
)

// Add appends a measurement after checking it can be printed in the
// benchmark text format and read back.
func (r *Run) Add(m Measurement) error {
	if !validName.MatchString(m.Name) {
		return fmt.Errorf("result: measurement name %q must match %s", m.Name, validName)
	}
	if m.Iterations < 1 {
		return fmt.Errorf("result: %s: iterations %d must be at least 1", m.Name, m.Iterations)
	}
	if len(m.Metrics) == 0 {
		return fmt.Errorf("result: %s has no metrics", m.Name)
	}
	for _, metric := range m.Metrics {
		if !validUnit.MatchString(metric.Unit) {
			return fmt.Errorf("result: %s: unit %q must match %s", m.Name, metric.Unit, validUnit)
		}
		if math.IsNaN(metric.Value) || math.IsInf(metric.Value, 0) {
			return fmt.Errorf("result: %s: %s value is %v", m.Name, metric.Unit, metric.Value)
		}
		if metric.Gate && metric.Unit != RatioUnit {
			return fmt.Errorf("result: %s: only %q metrics may gate, not %q", m.Name, RatioUnit, metric.Unit)
		}
		for _, sample := range metric.Samples {
			if math.IsNaN(sample) || math.IsInf(sample, 0) {
				return fmt.Errorf("result: %s: %s sample is %v", m.Name, metric.Unit, sample)
			}
		}
	}
	for _, existing := range r.Measurements {
		if existing.Name == m.Name {
			return fmt.Errorf("result: measurement %s added twice", m.Name)
		}
	}
	r.Measurements = append(r.Measurements, m)
	return nil
}

// Skip records that a part could not run and why.
func (r *Run) Skip(part, reason string) {
	if r.Skipped == nil {
		r.Skipped = map[string]string{}
	}
	r.Skipped[part] = reason
}

// Find returns the measurement with the given name.
func (r *Run) Find(name string) (Measurement, bool) {
	for _, m := range r.Measurements {
		if m.Name == name {
			return m, true
		}
	}
	return Measurement{}, false
}

// WriteJSON writes the run to path, indented.
func (r *Run) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("result: encode: %w", err)
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// ReadJSON reads a run written by WriteJSON.
func ReadJSON(path string) (*Run, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	var run Run
	if err := json.Unmarshal(data, &run); err != nil {
		return nil, fmt.Errorf("result: decode %s: %w", path, err)
	}
	return &run, nil
}

// WriteBenchText writes the measurements whose group is in groups (all
// when groups is empty) in the Go benchmark format: configuration lines,
// then one "BenchmarkName  N  value unit  value unit" line each.
func (r *Run) WriteBenchText(w io.Writer, groups ...string) error {
	var b strings.Builder
	for _, key := range slices.Sorted(maps.Keys(r.Environment)) {
		if !validName.MatchString(key) || strings.ContainsAny(r.Environment[key], "\n") {
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", key, r.Environment[key])
	}
	written := 0
	for _, m := range r.Measurements {
		if len(groups) > 0 && !slices.Contains(groups, m.Group()) {
			continue
		}
		lines := 1
		for _, metric := range m.Metrics {
			lines = max(lines, len(metric.Samples))
		}
		for line := range lines {
			fmt.Fprintf(&b, "Benchmark%s\t%d", m.Name, max(1, m.Iterations/lines))
			for _, metric := range m.Metrics {
				value := metric.Value
				if line < len(metric.Samples) {
					value = metric.Samples[line]
				}
				fmt.Fprintf(&b, "\t%s %s", formatValue(value), metric.Unit)
			}
			b.WriteByte('\n')
		}
		written++
	}
	if written == 0 {
		return errors.New("result: no measurements to write")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatValue(v float64) string {
	return strconv.FormatFloat(v, 'g', 6, 64)
}

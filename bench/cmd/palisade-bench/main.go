// Command palisade-bench runs the performance suite: hot path, real
// traffic and control plane. It writes results/run.json, one benchstat
// text file per part, summary.md and chart.png, then compares every
// same-run ratio with the baseline and exits 1 on a regression beyond the
// tolerance. Needs root (BPF, network namespaces).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/palisade-net/palisade/bench/regress"
	"github.com/palisade-net/palisade/bench/report"
	"github.com/palisade-net/palisade/bench/result"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "palisade-bench:", err)
		os.Exit(1)
	}
}

// part is one group of measurements.
type part struct {
	name string // the measurement group, e.g. "HotPath"
	run  func(mode string, r *result.Run) error
}

var parts = []part{
	{"HotPath", runHotPath},
	{"Traffic", runTraffic},
	{"ControlPlane", runControlPlane},
	{"NodeAgent", runNodeAgent},
}

func run() error {
	mode := flag.String("mode", "short", "full (make bench) or short (CI, under 5 minutes)")
	out := flag.String("out", "bench/results", "directory for run.json, *.txt, summary.md and chart.png")
	baselinePath := flag.String("baseline", "bench/baseline.json", "committed same-run ratios to compare with")
	update := flag.Bool("update-baseline", false, "write this run's ratios into the baseline instead of failing on regressions")
	only := flag.String("parts", "", "comma-separated subset of HotPath,Traffic,ControlPlane,NodeAgent")
	childInput := flag.String("agent-memory-child", "", "internal: run as the agent memory child on this PolicyEndpoints file")
	childPin := flag.String("agent-memory-pin", "", "internal: bpffs directory of the agent memory child")
	reportOnly := flag.Bool("report-only", false, "measure nothing: re-read run.json from -out, check it and rewrite the other outputs")
	flag.Parse()
	if *childInput != "" {
		return agentMemoryChild(*childInput, *childPin)
	}
	if *mode != "full" && *mode != "short" {
		return fmt.Errorf("-mode %q: want full or short", *mode)
	}
	if *only != "" {
		for name := range strings.SplitSeq(*only, ",") {
			if !slices.ContainsFunc(parts, func(p part) bool { return p.name == name }) {
				return fmt.Errorf("-parts: unknown part %q: want HotPath, Traffic, ControlPlane or NodeAgent", name)
			}
		}
	}
	if os.Geteuid() != 0 && !*reportOnly {
		return errors.New("needs root: BPF programs and network namespaces")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if !*reportOnly {
		if err := sweepStalePins(); err != nil {
			return err
		}
	}
	var baseline *regress.Baseline
	if _, err := os.Stat(*baselinePath); err == nil {
		if baseline, err = regress.ReadBaseline(*baselinePath); err != nil {
			return err
		}
	} else if !*update {
		fmt.Fprintf(os.Stderr, "no baseline at %s: checking ratios against their targets only\n", *baselinePath)
	}

	r := &result.Run{Mode: *mode, Started: time.Now(), Environment: environment()}
	if *reportOnly {
		var err error
		if r, err = result.ReadJSON(filepath.Join(*out, "run.json")); err != nil {
			return err
		}
	}
	var failed []string
	for _, p := range parts {
		if *reportOnly {
			break
		}
		if *only != "" && !strings.Contains(","+*only+",", ","+p.name+",") {
			continue
		}
		start := time.Now()
		fmt.Fprintf(os.Stderr, "== %s (%s)\n", p.name, *mode)
		if err := p.run(*mode, r); err != nil {
			fmt.Fprintf(os.Stderr, "%s failed: %v\n", p.name, err)
			r.Skip(p.name, "failed: "+err.Error())
			failed = append(failed, p.name)
		}
		fmt.Fprintf(os.Stderr, "   %s took %v\n", p.name, time.Since(start).Round(time.Second))
	}

	if *only != "" && !*reportOnly {
		if err := keepOtherParts(r, filepath.Join(*out, "run.json"), *only); err != nil {
			return err
		}
	}

	tolerance := regress.DefaultTolerance
	if baseline != nil {
		tolerance = baseline.Tolerance
	}
	if *update && len(failed) > 0 {
		fmt.Fprintf(os.Stderr, "parts failed: baseline %s left as it was\n", *baselinePath)
	}
	if *update && len(failed) == 0 {
		// Accepting this run: the outputs compare it with itself, so that
		// only missed targets show.
		baseline = regress.BaselineOf(r, tolerance, baseline, *mode == "full" && *only == "")
		if err := regress.WriteBaseline(*baselinePath, baseline); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "baseline %s updated with %d ratios\n", *baselinePath, len(baseline.Ratios))
	}
	findings := regress.Check(r, baseline)
	if err := writeOutputs(r, findings, tolerance, *out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "results in %s; %d gating ratios\n", *out, len(findings))
	if len(failed) > 0 {
		return fmt.Errorf("parts failed: %s", strings.Join(failed, ", "))
	}
	if failures := regress.Failures(findings); len(failures) > 0 && !*update {
		return fmt.Errorf("%d ratios regressed beyond their tolerance:\n%s", len(failures), regress.Explain(findings))
	}
	return nil
}

// keepOtherParts adds to r the measurements of the previous run at path
// that belong to parts this run did not measure, so that a run of some
// parts updates the results instead of replacing them.
func keepOtherParts(r *result.Run, path, only string) error {
	previous, err := result.ReadJSON(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ran := strings.Split(only, ",")
	var kept []result.Measurement
	for _, m := range previous.Measurements {
		if !slices.Contains(ran, m.Group()) {
			kept = append(kept, m)
		}
	}
	r.Measurements = append(kept, r.Measurements...)
	for part, reason := range previous.Skipped {
		if _, again := r.Skipped[part]; !again && !slices.Contains(ran, part) {
			r.Skip(part, reason)
		}
	}
	return nil
}

func writeOutputs(r *result.Run, findings []regress.Finding, tolerance float64, out string) error {
	if err := r.WriteJSON(filepath.Join(out, "run.json")); err != nil {
		return err
	}
	groups := map[string]bool{}
	for _, m := range r.Measurements {
		groups[m.Group()] = true
	}
	for group := range groups {
		f, err := os.Create(filepath.Join(out, strings.ToLower(group)+".txt"))
		if err != nil {
			return err
		}
		err = r.WriteBenchText(f, group)
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(out, "summary.md"), []byte(report.Summary(r, findings, tolerance)), 0o644); err != nil {
		return err
	}
	if len(findings) > 0 {
		return report.Chart(r, filepath.Join(out, "chart.png"))
	}
	return nil
}

func environment() map[string]string {
	env := map[string]string{
		"goos":   runtime.GOOS,
		"goarch": runtime.GOARCH,
		"cpus":   fmt.Sprint(runtime.NumCPU()),
		"go":     runtime.Version(),
	}
	if release, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		env["kernel"] = strings.TrimSpace(string(release))
	}
	if cpuinfo, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(cpuinfo), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				env["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return env
}

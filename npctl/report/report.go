// Package report prints simulation outcomes: a connectivity matrix per port
// and protocol, or JSON.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
)

// Matrix cells.
const (
	CellAllowed   = "."
	CellDenied    = "X"
	CellNotProbed = "-"
)

// Legend explains the cells of Matrix.
const Legend = ". allowed   X denied   - not probed (same pod, or a port the destination does not declare)"

// Matrix writes one table per port and protocol, rows the sources, columns
// the destinations, in the style of cyclonus.
func Matrix(w io.Writer, outcomes []simulate.Outcome) error {
	if len(outcomes) == 0 {
		_, err := fmt.Fprintln(w, "no probes: the manifests have no pod pair with a declared port (use --port)")
		return err
	}
	var ports []probe.Port
	byPort := map[probe.Port]map[[2]probe.Pod]bool{}
	fromSet, toSet := map[probe.Pod]bool{}, map[probe.Pod]bool{}
	for _, o := range outcomes {
		cells, ok := byPort[o.Port]
		if !ok {
			cells = map[[2]probe.Pod]bool{}
			byPort[o.Port] = cells
			ports = append(ports, o.Port)
		}
		cells[[2]probe.Pod{o.From, o.To}] = o.Allowed
		fromSet[o.From], toSet[o.To] = true, true
	}
	sort.Slice(ports, func(i, j int) bool { return probe.Less(ports[i], ports[j]) })
	from, to := sortedPods(fromSet), sortedPods(toSet)
	width := 0
	for _, p := range append(append([]probe.Pod(nil), from...), to...) {
		width = max(width, len(p.String()))
	}
	var b strings.Builder
	for i, port := range ports {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s\n", port)
		fmt.Fprintf(&b, "%-*s", width, "")
		for _, dst := range to {
			fmt.Fprintf(&b, "  %-*s", width, dst)
		}
		b.WriteString("\n")
		for _, src := range from {
			fmt.Fprintf(&b, "%-*s", width, src)
			for _, dst := range to {
				cell := CellNotProbed
				if allowed, probed := byPort[port][[2]probe.Pod{src, dst}]; probed {
					cell = CellDenied
					if allowed {
						cell = CellAllowed
					}
				}
				fmt.Fprintf(&b, "  %-*s", width, cell)
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "\n%s\n", Legend)
	lines := strings.Split(b.String(), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

func sortedPods(set map[probe.Pod]bool) []probe.Pod {
	out := make([]probe.Pod, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// ProbeJSON is the JSON form of one outcome.
type ProbeJSON struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Allowed  bool   `json:"allowed"`
}

// JSON writes the outcomes as a JSON array, one object per line.
func JSON(w io.Writer, outcomes []simulate.Outcome) error {
	var b strings.Builder
	b.WriteString("[")
	for i, o := range outcomes {
		line, err := json.Marshal(ProbeJSON{From: o.From.String(), To: o.To.String(), Port: o.Port.Port, Protocol: string(o.Protocol), Allowed: o.Allowed})
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  ")
		b.Write(line)
	}
	if len(outcomes) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]\n")
	_, err := io.WriteString(w, b.String())
	return err
}

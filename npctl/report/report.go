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
	cells := grid{}
	for _, o := range outcomes {
		cell := CellDenied
		if o.Allowed {
			cell = CellAllowed
		}
		cells.set(o.Port, o.From, o.To, cell)
	}
	return cells.write(w, "", Legend)
}

// grid holds the cell of each (source, destination) pair per port.
type grid map[probe.Port]map[[2]probe.Pod]string

func (g grid) set(port probe.Port, from, to probe.Pod, cell string) {
	if g[port] == nil {
		g[port] = map[[2]probe.Pod]string{}
	}
	g[port][[2]probe.Pod{from, to}] = cell
}

// write prints one table per port (its title followed by suffix), rows the
// sources, columns the destinations, in the style of cyclonus; pairs
// without a cell are not probed.
func (g grid) write(w io.Writer, suffix, legend string) error {
	var ports []probe.Port
	fromSet, toSet := map[probe.Pod]bool{}, map[probe.Pod]bool{}
	for port, cells := range g {
		ports = append(ports, port)
		for pair := range cells {
			fromSet[pair[0]], toSet[pair[1]] = true, true
		}
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
		fmt.Fprintf(&b, "%s%s\n%-*s", port, suffix, width, "")
		for _, dst := range to {
			fmt.Fprintf(&b, "  %-*s", width, dst)
		}
		b.WriteString("\n")
		for _, src := range from {
			fmt.Fprintf(&b, "%-*s", width, src)
			for _, dst := range to {
				cell, probed := g[port][[2]probe.Pod{src, dst}]
				if !probed {
					cell = CellNotProbed
				}
				fmt.Fprintf(&b, "  %-*s", width, cell)
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "\n%s\n", legend)
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

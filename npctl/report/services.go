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

// CellSome marks a service some but not all of whose backends are reachable.
const CellSome = "~"

// ServiceLegend explains the cells of ServiceMatrix.
const ServiceLegend = ". every backend reachable   ~ some backends   X none   - not probed (no backend, or the source is the only one)"

// ServiceMatrix writes one table per service port and protocol, rows the
// source pods, columns the Services.
func ServiceMatrix(w io.Writer, outcomes []simulate.ServiceOutcome) error {
	if len(outcomes) == 0 {
		_, err := fmt.Fprintln(w, "no probes: no Service with a ClusterIP and a ready backend pod in the manifests")
		return err
	}
	type cell struct{ allowed, denied int }
	var ports []probe.Port
	cells := map[probe.Port]map[[2]probe.Pod]*cell{}
	fromSet, toSet := map[probe.Pod]bool{}, map[probe.Pod]bool{}
	for _, o := range outcomes {
		byPair, ok := cells[o.Port]
		if !ok {
			byPair = map[[2]probe.Pod]*cell{}
			cells[o.Port] = byPair
			ports = append(ports, o.Port)
		}
		c := byPair[[2]probe.Pod{o.From, o.Service}]
		if c == nil {
			c = &cell{}
			byPair[[2]probe.Pod{o.From, o.Service}] = c
		}
		if o.Allowed {
			c.allowed++
		} else {
			c.denied++
		}
		fromSet[o.From], toSet[o.Service] = true, true
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
		fmt.Fprintf(&b, "%s (service port)\n%-*s", port, width, "")
		for _, svc := range to {
			fmt.Fprintf(&b, "  %-*s", width, svc)
		}
		b.WriteString("\n")
		for _, src := range from {
			fmt.Fprintf(&b, "%-*s", width, src)
			for _, svc := range to {
				mark := CellNotProbed
				if c := cells[port][[2]probe.Pod{src, svc}]; c != nil {
					switch {
					case c.denied == 0:
						mark = CellAllowed
					case c.allowed == 0:
						mark = CellDenied
					default:
						mark = CellSome
					}
				}
				fmt.Fprintf(&b, "  %-*s", width, mark)
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "\n%s\n", ServiceLegend)
	lines := strings.Split(b.String(), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

// ServiceProbeJSON is the JSON form of one service outcome: To is the
// Service, Via the backend pod, Port the service port.
type ServiceProbeJSON struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Via      string `json:"via"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Allowed  bool   `json:"allowed"`
}

// ServiceJSON writes the outcomes as a JSON array, one object per line.
func ServiceJSON(w io.Writer, outcomes []simulate.ServiceOutcome) error {
	var b strings.Builder
	b.WriteString("[")
	for i, o := range outcomes {
		line, err := json.Marshal(ServiceProbeJSON{From: o.From.String(), To: o.Service.String(), Via: o.Backend.String(),
			Port: o.Port.Port, Protocol: string(o.Protocol), Allowed: o.Allowed})
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

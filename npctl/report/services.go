package report

import (
	"encoding/json"
	"fmt"
	"io"
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
	type count struct{ allowed, denied int }
	counts := map[probe.Port]map[[2]probe.Pod]*count{}
	for _, o := range outcomes {
		if counts[o.Port] == nil {
			counts[o.Port] = map[[2]probe.Pod]*count{}
		}
		pair := [2]probe.Pod{o.From, o.Service}
		c := counts[o.Port][pair]
		if c == nil {
			c = &count{}
			counts[o.Port][pair] = c
		}
		if o.Allowed {
			c.allowed++
		} else {
			c.denied++
		}
	}
	cells := grid{}
	for port, pairs := range counts {
		for pair, c := range pairs {
			cell := CellSome
			switch {
			case c.denied == 0:
				cell = CellAllowed
			case c.allowed == 0:
				cell = CellDenied
			}
			cells.set(port, pair[0], pair[1], cell)
		}
	}
	return cells.write(w, " (service port)", ServiceLegend)
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

// Package node reads what the dataplane has programmed on this node from
// its pinned maps, read-only (through dataplane.Inspect): it loads no
// program and touches no attachment, so it is safe next to a running agent.
package node

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/dataplane/compile"
)

// Endpoint is one programmed endpoint.
type Endpoint struct {
	Ifindex int
	// Interface is the name of the link in this network namespace, "" if
	// there is none.
	Interface  string
	EndpointID uint32
	Revision   uint32
	// Isolated per direction (policy.Ingress, policy.Egress).
	Isolated [2]bool
	Counters dataplane.Counters
}

// Read lists the endpoints pinned at pinPath, sorted by ifindex.
func Read(pinPath string) (list []Endpoint, err error) {
	in, err := dataplane.Inspect(pinPath)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, in.Close()) }()
	states, err := in.Endpoints()
	if err != nil {
		return nil, err
	}
	list = make([]Endpoint, 0, len(states))
	for _, s := range states {
		e := Endpoint{Ifindex: s.Ifindex, EndpointID: s.EndpointID, Revision: s.Revision, Isolated: s.Isolated}
		if link, err := netlink.LinkByIndex(s.Ifindex); err == nil {
			e.Interface = link.Attrs().Name
		}
		if e.Counters, err = in.Counters(s.Ifindex); err != nil {
			return nil, fmt.Errorf("endpoint of ifindex %d: %w", s.Ifindex, err)
		}
		list = append(list, e)
	}
	return list, nil
}

// Rules reads the tables programmed for the endpoint behind ifindex, per
// direction (policy.Ingress, policy.Egress), in the form of
// dataplane.CanonicalTables; a direction that is not isolated is nil.
func Rules(pinPath string, ifindex int) (tables [2]*compile.Direction, err error) {
	in, err := dataplane.Inspect(pinPath)
	if err != nil {
		return tables, err
	}
	defer func() { err = errors.Join(err, in.Close()) }()
	return in.Tables(ifindex)
}

// Package node reads what the dataplane has programmed on this node from
// its pinned maps, read-only: it loads no program and touches no
// attachment, so it is safe next to a running agent.
package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/palisade-net/palisade/dataplane"
)

// pinnedEndpoint mirrors struct endpoint of bpf/lib/common.h, the value of
// endpoint_records. TestReadMatchesTheDataplane keeps the two in step.
type pinnedEndpoint struct {
	ID          uint32
	Revision    uint32
	Policy      [2]uint32
	Isolated    [2]uint8
	Pad         [6]uint8
	ContentHash uint64
}

// pinnedCounters mirrors struct counters of bpf/lib/counters.h (per CPU,
// index endpoint id * 2 + direction).
type pinnedCounters struct {
	AllowPackets, AllowBytes, DenyPackets, DenyBytes uint64
}

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

func openPinned(pinPath, name string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, name), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no dataplane state at %s (is the agent running with --pin-path %s?): %w", pinPath, pinPath, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w", name, err)
	}
	return m, nil
}

// endpointRecords maps each policed ifindex to its endpoint record: an
// ifindex leads to a record reference (index + 1; 0 for none) in
// endpoint_refs (an array, for ifindexes below its size) or
// endpoint_refs_hash, and the reference to the record in endpoint_records.
func endpointRecords(pinPath string) (map[int]pinnedEndpoint, error) {
	refs := map[uint32]uint32{}
	array, err := openPinned(pinPath, "endpoint_refs")
	if err != nil {
		return nil, err
	}
	defer array.Close()
	size := array.MaxEntries()
	keys, values := make([]uint32, size), make([]uint32, size)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := array.BatchLookup(&cursor, keys, values, nil)
		for i := range n {
			if values[i] != 0 {
				refs[keys[i]] = values[i]
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read endpoint_refs: %w", err)
		}
	}
	hash, err := openPinned(pinPath, "endpoint_refs_hash")
	if err != nil {
		return nil, err
	}
	defer hash.Close()
	var ifindex, ref uint32
	it := hash.Iterate()
	for it.Next(&ifindex, &ref) {
		if ref != 0 {
			refs[ifindex] = ref
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read endpoint_refs_hash: %w", err)
	}
	records, err := openPinned(pinPath, "endpoint_records")
	if err != nil {
		return nil, err
	}
	defer records.Close()
	out := make(map[int]pinnedEndpoint, len(refs))
	for ifindex, ref := range refs {
		var ep pinnedEndpoint
		if err := records.Lookup(ref-1, &ep); err != nil {
			return nil, fmt.Errorf("endpoint record %d of ifindex %d: %w", ref-1, ifindex, err)
		}
		out[int(ifindex)] = ep
	}
	return out, nil
}

// Read lists the endpoints pinned at pinPath, sorted by ifindex.
func Read(pinPath string) ([]Endpoint, error) {
	records, err := endpointRecords(pinPath)
	if err != nil {
		return nil, err
	}
	counters, err := openPinned(pinPath, "endpoint_counters")
	if err != nil {
		return nil, err
	}
	defer counters.Close()
	out := make([]Endpoint, 0, len(records))
	for ifindex, value := range records {
		e := Endpoint{
			Ifindex:    ifindex,
			EndpointID: value.ID,
			Revision:   value.Revision,
			Isolated:   [2]bool{value.Isolated[0] != 0, value.Isolated[1] != 0},
		}
		if link, err := netlink.LinkByIndex(ifindex); err == nil {
			e.Interface = link.Attrs().Name
		}
		for dir, dst := range []*dataplane.DirCounters{&e.Counters.Ingress, &e.Counters.Egress} {
			var perCPU []pinnedCounters
			if err := counters.Lookup(value.ID*2+uint32(dir), &perCPU); err != nil {
				return nil, fmt.Errorf("counters of ifindex %d: %w", ifindex, err)
			}
			for _, c := range perCPU {
				dst.AllowPackets += c.AllowPackets
				dst.AllowBytes += c.AllowBytes
				dst.DenyPackets += c.DenyPackets
				dst.DenyBytes += c.DenyBytes
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ifindex < out[j].Ifindex })
	return out, nil
}

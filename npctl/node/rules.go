package node

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/policy"
)

// pinnedCIDRKey and pinnedCIDRValue mirror struct cidr_key and cidr_value,
// pinnedPortKey struct port_key (packed), of bpf/lib/common.h.
// TestRulesMatchTheCompiledPolicy keeps them in step.
type pinnedCIDRKey struct {
	Prefixlen uint32
	Tag       [4]byte // big-endian policy id << 1 | is IPv4
	Addr      [16]byte
}

type pinnedCIDRValue struct {
	Portset uint32
	AnyRule uint32
	Flags   uint32
}

type pinnedPortKey struct {
	Prefixlen uint32
	Portset   [4]byte // big-endian
	Proto     uint8
	Port      [2]byte // big-endian
}

const (
	cidrTagBits   = 32 // the tag precedes the address in the trie key
	portKeyBits   = 40 // port set and protocol precede the port
	cidrAnyProtos = 1  // CIDR_ANY_PROTOCOL
)

// Rules reads the tables programmed for the endpoint behind ifindex, per
// direction (policy.Ingress, policy.Egress); a direction that is not
// isolated is nil.
func Rules(pinPath string, ifindex int) ([2]*compile.Direction, error) {
	var out [2]*compile.Direction
	records, err := endpointRecords(pinPath)
	if err != nil {
		return out, err
	}
	ep, ok := records[ifindex]
	if !ok {
		return out, fmt.Errorf("ifindex %d has no programmed endpoint", ifindex)
	}
	cidrs, err := openPinned(pinPath, "cidr_rules")
	if err != nil {
		return out, err
	}
	defer cidrs.Close()
	ports, err := openPinned(pinPath, "port_rules")
	if err != nil {
		return out, err
	}
	defer ports.Close()

	type cidrEntry struct {
		prefix netip.Prefix
		value  pinnedCIDRValue
	}
	byPolicy := map[uint32][]cidrEntry{}
	var key pinnedCIDRKey
	var value pinnedCIDRValue
	it := cidrs.Iterate()
	for it.Next(&key, &value) {
		tag := binary.BigEndian.Uint32(key.Tag[:])
		bits := int(key.Prefixlen) - cidrTagBits
		var addr netip.Addr
		if tag&1 == 1 {
			addr = netip.AddrFrom4([4]byte(key.Addr[:4]))
		} else {
			addr = netip.AddrFrom16(key.Addr)
		}
		prefix, err := addr.Prefix(bits)
		if err != nil {
			return out, fmt.Errorf("CIDR entry of policy %d: %w", tag>>1, err)
		}
		byPolicy[tag>>1] = append(byPolicy[tag>>1], cidrEntry{prefix, value})
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read cidr_rules: %w", err)
	}
	portsets := map[uint32][]compile.PortEntry{}
	var pk pinnedPortKey
	var rule uint32
	pit := ports.Iterate()
	for pit.Next(&pk, &rule) {
		set := binary.BigEndian.Uint32(pk.Portset[:])
		portsets[set] = append(portsets[set], compile.PortEntry{
			Protocol: policy.Protocol(pk.Proto),
			Port:     binary.BigEndian.Uint16(pk.Port[:]),
			Bits:     int(pk.Prefixlen) - portKeyBits,
			Rule:     rule,
		})
	}
	if err := pit.Err(); err != nil {
		return out, fmt.Errorf("read port_rules: %w", err)
	}

	for dir := range 2 {
		if ep.Isolated[dir] == 0 {
			continue
		}
		d := &compile.Direction{}
		local := map[uint32]int{}
		for _, e := range byPolicy[ep.Policy[dir]] {
			entry := compile.CIDREntry{Prefix: e.prefix, Portset: -1}
			if e.value.Portset != 0 {
				i, seen := local[e.value.Portset]
				if !seen {
					i = len(d.Portsets)
					local[e.value.Portset] = i
					d.Portsets = append(d.Portsets, compile.Portset{Entries: portsets[e.value.Portset]})
				}
				entry.Portset = i
			}
			if e.value.Flags&cidrAnyProtos != 0 {
				entry.AnyProtocol, entry.AnyRule = true, e.value.AnyRule
			}
			d.CIDRs = append(d.CIDRs, entry)
		}
		out[dir] = Canonical(d)
	}
	return out, nil
}

// Canonical returns d with prefixes sorted, identical port sets merged and
// numbered in order of first use, and port entries sorted, so that equal
// tables compare and print equal however they were built.
func Canonical(d *compile.Direction) *compile.Direction {
	cidrs := slices.Clone(d.CIDRs)
	slices.SortFunc(cidrs, func(a, b compile.CIDREntry) int {
		return cmp.Or(cmp.Compare(boolRank(a.Prefix.Addr().Is6()), boolRank(b.Prefix.Addr().Is6())),
			a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	out := &compile.Direction{}
	index := map[string]int{}
	for i := range cidrs {
		if cidrs[i].Portset < 0 {
			continue
		}
		entries := slices.Clone(d.Portsets[cidrs[i].Portset].Entries)
		slices.SortFunc(entries, func(a, b compile.PortEntry) int {
			return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Bits, b.Bits), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Rule, b.Rule))
		})
		text := fmt.Sprint(entries)
		n, seen := index[text]
		if !seen {
			n = len(out.Portsets)
			index[text] = n
			out.Portsets = append(out.Portsets, compile.Portset{Entries: entries})
		}
		cidrs[i].Portset = n
	}
	out.CIDRs = cidrs
	return out
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

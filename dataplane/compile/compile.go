// Package compile turns one direction of a policy.Endpoint into disjoint
// longest-prefix-match tables: a CIDR table whose longest matching prefix
// alone decides the peer address (excepts and overlapping rules folded in),
// and port-set tables whose longest matching port prefix alone decides the
// protocol and port. Lookup cost therefore does not depend on how many rules,
// excepts or port ranges the policy has.
package compile

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/palisade-net/palisade/policy"
)

// CIDREntry is one prefix of the CIDR table. A peer address takes the entry
// of the longest prefix that contains it; no entry means no rule allows it.
type CIDREntry struct {
	Prefix netip.Prefix
	// Portset indexes Direction.Portsets, or is -1.
	Portset int
	// AnyProtocol: rule AnyRule, which has no ports, allows every packet
	// the port set does not.
	AnyProtocol bool
	AnyRule     uint32
}

// PortEntry allows Protocol on the ports sharing the first Bits bits with
// Port. Bits == 0 allows every packet of Protocol, port-less ones included;
// a port-less packet matches nothing else.
type PortEntry struct {
	Protocol policy.Protocol
	Port     uint16
	Bits     int
	Rule     uint32
}

// Portset is a port table; a packet takes its longest matching entry.
type Portset struct {
	Entries []PortEntry
}

// Direction is the compiled form of a policy.Direction's rules.
type Direction struct {
	CIDRs    []CIDREntry
	Portsets []Portset
}

// Validate reports the first rule the dataplane cannot enforce as written.
func Validate(d *policy.Direction) error {
	for i := range d.Rules {
		r := &d.Rules[i]
		if !r.CIDR.IsValid() {
			return fmt.Errorf("rule %d (index %d): invalid CIDR %v", r.ID, i, r.CIDR)
		}
		for _, e := range r.Except {
			if !e.IsValid() {
				return fmt.Errorf("rule %d (index %d): invalid except %v", r.ID, i, e)
			}
		}
		for _, p := range r.Ports {
			if p.Port != 0 && p.EndPort != 0 && p.EndPort < p.Port {
				return fmt.Errorf("rule %d (index %d): %v port range %d-%d ends before it starts", r.ID, i, p.Protocol, p.Port, p.EndPort)
			}
		}
	}
	return nil
}

type node struct {
	prefix   netip.Prefix
	cidrOf   []int // rules whose CIDR is this prefix
	exceptOf []int // rules with an except equal to this prefix
}

type value struct {
	portset     int
	anyProtocol bool
	anyRule     uint32
}

var noValue = value{portset: -1}

// ErrTooLarge: the port sets of a direction would hold more entries than
// the limit given to CompileWithin.
var ErrTooLarge = errors.New("compiled port sets exceed the limit")

// Compile builds the tables of d. It fails only on invalid input (see
// Validate).
func Compile(d *policy.Direction) (*Direction, error) {
	return CompileWithin(d, 0)
}

// CompileWithin is Compile that gives up with ErrTooLarge as soon as the
// port sets hold more than maxPortEntries entries (0: no limit). Rules
// whose regions each need their own port set make tables that grow with
// the square of the rules; the limit stops such a policy before the work.
func CompileWithin(d *policy.Direction, maxPortEntries int) (*Direction, error) {
	if err := Validate(d); err != nil {
		return nil, err
	}
	c := &compiler{rules: d.Rules, portsetIndex: map[string]int{}, bySignature: map[string]value{}, maxPortEntries: maxPortEntries}
	for _, is4 := range []bool{true, false} {
		c.compileFamily(is4)
		if c.portEntries > maxPortEntries && maxPortEntries > 0 {
			return nil, fmt.Errorf("%w: more than %d port entries", ErrTooLarge, maxPortEntries)
		}
	}
	return &c.out, nil
}

type compiler struct {
	rules        []policy.Rule
	out          Direction
	portsetIndex map[string]int   // canonical port set text -> index
	bySignature  map[string]value // matching rule indexes -> value
	// portEntries counts the entries of out's port sets; past
	// maxPortEntries (> 0) valueOf builds no more.
	portEntries, maxPortEntries int
}

func (c *compiler) compileFamily(is4 bool) {
	nodes := map[netip.Prefix]*node{}
	get := func(p netip.Prefix) *node {
		p = p.Masked()
		n := nodes[p]
		if n == nil {
			n = &node{prefix: p}
			nodes[p] = n
		}
		return n
	}
	for i := range c.rules {
		r := &c.rules[i]
		if r.CIDR.Addr().Is4() != is4 {
			continue
		}
		n := get(r.CIDR)
		n.cidrOf = append(n.cidrOf, i)
		for _, e := range r.Except {
			if e.Addr().Is4() != is4 {
				continue // an except of the other family never matches this rule's peers
			}
			n := get(e)
			n.exceptOf = append(n.exceptOf, i)
		}
	}
	sorted := make([]*node, 0, len(nodes))
	for _, n := range nodes {
		sorted = append(sorted, n)
	}
	// Parents sort before their children.
	slices.SortFunc(sorted, func(a, b *node) int {
		if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.prefix.Bits(), b.prefix.Bits())
	})

	type frame struct {
		prefix   netip.Prefix
		included []int // rules whose CIDR contains the prefix
		excluded []int // rules with an except containing the prefix
		value    value
	}
	var stack []frame
	for _, n := range sorted {
		for len(stack) > 0 && !contains(stack[len(stack)-1].prefix, n.prefix) {
			stack = stack[:len(stack)-1]
		}
		parent := frame{value: noValue}
		if len(stack) > 0 {
			parent = stack[len(stack)-1]
		}
		f := frame{
			prefix:   n.prefix,
			included: union(parent.included, n.cidrOf),
			excluded: union(parent.excluded, n.exceptOf),
		}
		f.value = c.valueOf(difference(f.included, f.excluded))
		if f.value != parent.value {
			c.out.CIDRs = append(c.out.CIDRs, CIDREntry{
				Prefix:      n.prefix,
				Portset:     f.value.portset,
				AnyProtocol: f.value.anyProtocol,
				AnyRule:     f.value.anyRule,
			})
		}
		stack = append(stack, f)
	}
}

func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// union merges two sorted, duplicate-free index lists.
func union(a, b []int) []int {
	if len(b) == 0 {
		return a
	}
	out := make([]int, 0, len(a)+len(b))
	out = append(out, a...)
	out = append(out, b...)
	slices.Sort(out)
	return slices.Compact(out)
}

func difference(a, b []int) []int {
	if len(b) == 0 {
		return a
	}
	var out []int
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

// valueOf is what a peer matched by exactly the rules at indexes matching
// (ascending) is allowed.
func (c *compiler) valueOf(matching []int) value {
	if len(matching) == 0 {
		return noValue
	}
	var sig strings.Builder
	for _, i := range matching {
		sig.WriteString(strconv.Itoa(i))
		sig.WriteByte(',')
	}
	if v, ok := c.bySignature[sig.String()]; ok {
		return v
	}
	if c.maxPortEntries > 0 && c.portEntries > c.maxPortEntries {
		return noValue // Compile fails: the value does not matter
	}
	v := noValue
	var withPorts []*policy.Rule
	for _, i := range matching {
		r := &c.rules[i]
		if len(r.Ports) == 0 {
			v.anyProtocol, v.anyRule = true, r.ID
			break // later rules never decide
		}
		withPorts = append(withPorts, r)
	}
	if entries := portEntries(withPorts); len(entries) > 0 {
		v.portset = c.internPortset(entries)
	}
	c.bySignature[sig.String()] = v
	return v
}

func (c *compiler) internPortset(entries []PortEntry) int {
	var text strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&text, "%d/%d/%d/%d;", e.Protocol, e.Port, e.Bits, e.Rule)
	}
	if i, ok := c.portsetIndex[text.String()]; ok {
		return i
	}
	i := len(c.out.Portsets)
	c.out.Portsets = append(c.out.Portsets, Portset{Entries: entries})
	c.portEntries += len(entries)
	c.portsetIndex[text.String()] = i
	return i
}

type portRange struct {
	lo, hi uint16
	order  int // position of the rule: the lowest decides
	rule   uint32
}

// portEntries builds the port table of rules (in rule order), each port
// going to the first rule that allows it.
func portEntries(rules []*policy.Rule) []PortEntry {
	byProto := map[policy.Protocol][]portRange{}
	for order, r := range rules {
		for _, p := range r.Ports {
			pr := portRange{lo: p.Port, hi: p.EndPort, order: order, rule: r.ID}
			switch {
			case p.Port == 0:
				pr.lo, pr.hi = 0, 65535
			case p.EndPort == 0:
				pr.hi = p.Port
			}
			byProto[p.Protocol] = append(byProto[p.Protocol], pr)
		}
	}
	protos := make([]policy.Protocol, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, p)
	}
	slices.Sort(protos)
	var out []PortEntry
	for _, proto := range protos {
		ranges := byProto[proto]
		all := -1 // order of the first all-ports entry
		var allRule uint32
		for _, r := range ranges {
			if r.lo == 0 && r.hi == 65535 && (all < 0 || r.order < all) {
				all, allRule = r.order, r.rule
			}
		}
		if all >= 0 {
			out = append(out, PortEntry{Protocol: proto, Rule: allRule})
		}
		for _, seg := range firstRuleSegments(ranges, all) {
			out = append(out, prefixesOf(proto, seg)...)
		}
	}
	return out
}

// firstRuleSegments paints ports with the first rule (lowest order)
// covering them, ignoring rules at or after stopOrder (>= 0), and returns
// the painted segments, adjacent ones of the same rule merged. The range
// ends cut the ports into elementary segments; rules paint them in order,
// each segment once, skipping painted runs (union-find), so the cost is
// n log n in the ranges, not the square of them.
func firstRuleSegments(ranges []portRange, stopOrder int) []portRange {
	var kept []portRange
	for _, r := range ranges {
		if stopOrder < 0 || r.order < stopOrder {
			kept = append(kept, r)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	slices.SortStableFunc(kept, func(a, b portRange) int { return cmp.Compare(a.order, b.order) })
	cuts := make([]int, 0, 2*len(kept))
	for _, r := range kept {
		cuts = append(cuts, int(r.lo), int(r.hi)+1)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	// Segment j is ports cuts[j] to cuts[j+1]-1; unpainted[j] leads to the
	// first unpainted segment at or after j.
	owner := make([]int, len(cuts)-1)
	unpainted := make([]int, len(cuts))
	for j := range unpainted {
		unpainted[j] = j
	}
	next := func(j int) int {
		for unpainted[j] != j {
			unpainted[j] = unpainted[unpainted[j]]
			j = unpainted[j]
		}
		return j
	}
	for j := range owner {
		owner[j] = -1
	}
	for k, r := range kept {
		first, _ := slices.BinarySearch(cuts, int(r.lo))
		end, _ := slices.BinarySearch(cuts, int(r.hi)+1)
		for j := next(first); j < end; j = next(j) {
			owner[j] = k
			unpainted[j] = j + 1
		}
	}
	var merged []portRange
	for j, k := range owner {
		if k < 0 {
			continue
		}
		lo, hi := uint16(cuts[j]), uint16(cuts[j+1]-1)
		if n := len(merged); n > 0 && merged[n-1].rule == kept[k].rule && int(merged[n-1].hi)+1 == cuts[j] {
			merged[n-1].hi = hi
			continue
		}
		merged = append(merged, portRange{lo: lo, hi: hi, order: kept[k].order, rule: kept[k].rule})
	}
	return merged
}

// prefixesOf covers seg with the fewest aligned port prefixes.
func prefixesOf(proto policy.Protocol, seg portRange) []PortEntry {
	var out []PortEntry
	lo, hi := int(seg.lo), int(seg.hi)
	for lo <= hi {
		size := 1
		for lo%(size*2) == 0 && lo+size*2-1 <= hi && size < 65536 {
			size *= 2
		}
		bits := 16
		for s := size; s > 1; s /= 2 {
			bits--
		}
		out = append(out, PortEntry{Protocol: proto, Port: uint16(lo), Bits: bits, Rule: seg.rule})
		lo += size
	}
	return out
}

// Lookup answers as the dataplane does: whether a packet with this peer,
// protocol and port (hasPort false for port-less packets) is allowed, and by
// which rule.
func (d *Direction) Lookup(peer netip.Addr, proto policy.Protocol, hasPort bool, port uint16) (bool, uint32) {
	best := -1
	for i, e := range d.CIDRs {
		if e.Prefix.Contains(peer) && (best < 0 || e.Prefix.Bits() > d.CIDRs[best].Prefix.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return false, 0
	}
	e := d.CIDRs[best]
	if e.Portset >= 0 {
		bestBits := -1
		var rule uint32
		for _, pe := range d.Portsets[e.Portset].Entries {
			if pe.Protocol != proto || pe.Bits > 0 && !hasPort {
				continue
			}
			if pe.Bits > 0 && port>>(16-pe.Bits) != pe.Port>>(16-pe.Bits) {
				continue
			}
			if pe.Bits > bestBits {
				bestBits, rule = pe.Bits, pe.Rule
			}
		}
		if bestBits >= 0 {
			return true, rule
		}
	}
	if e.AnyProtocol {
		return true, e.AnyRule
	}
	return false, 0
}

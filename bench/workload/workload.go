// Package workload makes the endpoint policies the benchmarks program:
// many rules that do not match the measured traffic, and one that does,
// ordered last so that no shortcut on rule order helps.
package workload

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/palisade-net/palisade/policy"
)

// Spec sizes one isolated direction.
type Spec struct {
	// CIDRs is the number of rules, each with its own CIDR; the last one
	// holds Allow.
	CIDRs int
	// PortRanges is the number of TCP port ranges spread over the rules
	// (0: every rule allows all ports). AllowPort is added to the last rule.
	PortRanges int
	Allow      netip.Prefix
	AllowPort  uint16
	// Seed makes the filler CIDRs; equal seeds give equal directions.
	Seed uint64
}

// Direction builds the isolated direction s describes. Filler CIDRs are
// random prefixes (/8 to /32, /16 to /128 for IPv6) of Allow's family that
// do not contain Allow, so that they never decide the measured packets.
func Direction(s Spec) (policy.Direction, error) {
	if s.CIDRs < 1 || !s.Allow.IsValid() {
		return policy.Direction{}, fmt.Errorf("workload: need at least one CIDR and a valid allowed prefix, got %+v", s)
	}
	if s.PortRanges > 0 && s.AllowPort == 0 {
		return policy.Direction{}, fmt.Errorf("workload: %d port ranges but no allowed port", s.PortRanges)
	}
	if s.PortRanges > 2000 {
		return policy.Direction{}, fmt.Errorf("workload: %d port ranges do not fit between ports 20000 and 60000", s.PortRanges)
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x70a115ade))
	rules := make([]policy.Rule, s.CIDRs)
	seen := map[netip.Prefix]bool{s.Allow.Masked(): true}
	for i := range s.CIDRs - 1 {
		prefix := fillerPrefix(rng, s.Allow)
		for seen[prefix] || prefix.Contains(s.Allow.Addr()) {
			prefix = fillerPrefix(rng, s.Allow)
		}
		seen[prefix] = true
		rules[i] = policy.Rule{ID: uint32(i + 1), CIDR: prefix}
	}
	last := s.CIDRs - 1
	rules[last] = policy.Rule{ID: uint32(s.CIDRs), CIDR: s.Allow.Masked()}
	for j := range s.PortRanges {
		rule := &rules[(last+j)%s.CIDRs]
		low := uint16(20000 + 20*j)
		rule.Ports = append(rule.Ports, policy.PortRange{Protocol: policy.TCP, Port: low, EndPort: low + 9})
	}
	if s.PortRanges > 0 {
		rules[last].Ports = append(rules[last].Ports, policy.PortRange{Protocol: policy.TCP, Port: s.AllowPort})
	}
	return policy.Direction{Isolated: true, Rules: rules}, nil
}

func fillerPrefix(rng *rand.Rand, like netip.Prefix) netip.Prefix {
	if like.Addr().Is4() {
		var b [4]byte
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return netip.PrefixFrom(netip.AddrFrom4(b), 8+rng.IntN(25)).Masked()
	}
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 16+rng.IntN(113)).Masked()
}

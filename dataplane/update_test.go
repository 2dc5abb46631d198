package dataplane

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// TestPolicyReplaceIsAtomic switches between two policies while packets
// flow: what both allow always passes, what both deny never does.
func TestPolicyReplaceIsAtomic(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	policyWith := func(extraPort uint16, extraCIDRs int) *policy.Endpoint {
		ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 1, CIDR: netip.MustParsePrefix("10.0.1.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("10.0.1.128/25")},
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}, {Protocol: policy.TCP, Port: extraPort}}},
		}}}
		for i := range extraCIDRs {
			ep.Ingress.Rules = append(ep.Ingress.Rules, policy.Rule{ID: uint32(100 + i),
				CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 32)})
		}
		return ep
	}
	policies := []*policy.Endpoint{policyWith(81, 50), policyWith(82, 300)}
	if _, err := d.SetPolicy(ifindex, policies[0]); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sent, violations atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for port := uint16(1024); !stop.Load(); port++ {
			allowed := tcp(peerIP, podIP, port, 80, packet.SYN)                           // both allow
			denied := tcp(netip.MustParseAddr("10.0.1.200"), podIP, port, 80, packet.SYN) // both except it
			if ok, err := runFrameErr(d, policy.Ingress, ifindex, allowed); err != nil || !ok {
				violations.Add(1)
			}
			if ok, err := runFrameErr(d, policy.Ingress, ifindex, denied); err != nil || ok {
				violations.Add(1)
			}
			sent.Add(2)
		}
	}()
	for i := range 300 {
		if _, err := d.SetPolicy(ifindex, policies[(i+1)%2]); err != nil {
			t.Error(err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if v := violations.Load(); v != 0 {
		t.Errorf("%d of %d packets judged against both policies during 300 replacements", v, sent.Load())
	}
	t.Logf("%d packets during 300 replacements", sent.Load())
	occ, err := d.Occupancy()
	if err != nil {
		t.Fatal(err)
	}
	// The last policy (policies[0]: 2 entries for rule 1 and its except, 50 hosts) alone remains.
	if got := occ["cidr_rules"].Used; got != 52 {
		t.Errorf("%d CIDR entries left, want 52: old policies leaked", got)
	}
}

// BenchmarkSetPolicy reports the latency of replacing one endpoint's
// policy (50 CIDRs and a port list) by another.
func BenchmarkSetPolicy(b *testing.B) {
	d := newDataplane(b, Config{})
	ifindex := dummyLink(b)
	policies := make([]*policy.Endpoint, 2)
	for p := range policies {
		ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
		for i := range 50 {
			ep.Ingress.Rules = append(ep.Ingress.Rules, policy.Rule{ID: uint32(i + 1),
				CIDR:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(p), 0, byte(i)}), 32),
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}, {Protocol: policy.TCP, Port: 8080 + uint16(p)}}})
		}
		policies[p] = ep
	}
	for i := 0; b.Loop(); i++ {
		if _, err := d.SetPolicy(ifindex, policies[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRemoveAndReaddIsAtomic removes and re-adds the only endpoint slot's
// policy while packets flow: a packet both the policy and no policy allow
// always passes, and the slot and entries of a removal are freed.
func TestRemoveAndReaddIsAtomic(t *testing.T) {
	d := newDataplane(t, Config{MaxEndpoints: 1})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sent, violations atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for port := uint16(1024); !stop.Load(); port++ {
			if ok, err := runFrameErr(d, policy.Ingress, ifindex, tcp(peerIP, podIP, port, 80, packet.SYN)); err != nil || !ok {
				violations.Add(1)
			}
			sent.Add(1)
		}
	}()
	const cycles = 100
	for range cycles {
		if err := d.RemovePolicy(ifindex); err != nil {
			t.Error(err)
			break
		}
		if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
			t.Errorf("re-adding into the freed slot: %v", err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if v := violations.Load(); v != 0 {
		t.Errorf("%d of %d allowed packets denied during %d removals", v, sent.Load(), cycles)
	}
	t.Logf("%d packets during %d removals", sent.Load(), cycles)
	if err := d.RemovePolicy(ifindex); err != nil {
		t.Fatal(err)
	}
	occ, err := d.Occupancy()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"endpoints", "cidr_rules", "port_rules"} {
		if got := occ[name].Used; got != 0 {
			t.Errorf("%d %s entries left after removal", got, name)
		}
	}
}

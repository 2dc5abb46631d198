package dataplane

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// manyPorts is an ingress policy whose rule for 10.0.1.0/24 has n random
// ports and ranges over TCP, UDP and SCTP (one UDP entry without a port:
// all of them), and whose wider rule for 10.0.0.0/16 overlaps it with two
// ports of its own (kept inside its CIDR entries, not a port set).
func manyPorts(seed uint64, n int) *policy.Endpoint {
	r := rand.New(rand.NewPCG(seed, 1))
	protocols := []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}
	big := policy.Rule{ID: 100 + uint32(seed), CIDR: netip.MustParsePrefix("10.0.1.0/24")}
	for range n {
		p := policy.PortRange{Protocol: protocols[r.IntN(2)*(1+r.IntN(2))], Port: uint16(1 + r.IntN(65535))}
		if r.IntN(2) == 0 {
			p.EndPort = p.Port + uint16(r.IntN(int(65535-p.Port)+1)/(1+r.IntN(400)))
		}
		big.Ports = append(big.Ports, p)
	}
	if seed%2 == 0 {
		big.Ports = append(big.Ports, policy.PortRange{Protocol: policy.UDP})
	}
	wide := policy.Rule{ID: 7, CIDR: netip.MustParsePrefix("10.0.0.0/16"), Ports: []policy.PortRange{
		{Protocol: policy.TCP, Port: 443}, {Protocol: policy.SCTP, Port: 3868, EndPort: 3869},
	}}
	return &policy.Endpoint{Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{wide, big}}}
}

// checkPorts compares the program's verdict with policy.Evaluate for TCP,
// UDP and SCTP frames from peer to every step-th destination port
// (offset by the protocol, so that all ports are covered across them).
func checkPorts(t *testing.T, d *Dataplane, ifindex int, ep *policy.Endpoint, step int) (allowed int) {
	t.Helper()
	wrong := 0
	for _, proto := range []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP} {
		for port := int(proto) % step; port < 65536; port += step {
			spec := packet.Spec{Src: peerIP, Dst: podIP, Protocol: proto, SrcPort: 40000, DstPort: uint16(port)}
			if proto == policy.TCP {
				spec.TCPFlags = packet.SYN
			}
			frame := packet.Build(spec)
			want := policy.Evaluate(ep, policy.Ingress, frame)
			got := runFrame(t, d, policy.Ingress, ifindex, frame)
			if got != want.Allowed {
				if wrong++; wrong <= 5 {
					t.Errorf("%v port %d: allowed=%v, the evaluator says %v", proto, port, got, want)
				}
			}
			if got {
				allowed++
			}
		}
	}
	if wrong > 5 {
		t.Errorf("%d wrong verdicts in all", wrong)
	}
	return allowed
}

func denseSlotsUsed(t *testing.T, d *Dataplane) int {
	t.Helper()
	usage, err := d.Occupancy()
	if err != nil {
		t.Fatal(err)
	}
	return usage["port_dense"].Used
}

func TestDensePortSetsJudgeEveryPortLikeTheEvaluator(t *testing.T) {
	for _, dense := range []int{8, -1} {
		d := newDataplane(t, Config{DensePortsets: dense})
		ifindex := dummyLink(t)
		ep := manyPorts(2, 600)
		if _, err := d.SetPolicy(ifindex, ep); err != nil {
			t.Fatal(err)
		}
		wantSlots := 1
		if dense < 0 {
			wantSlots = 0
		}
		if got := denseSlotsUsed(t, d); got != wantSlots {
			t.Fatalf("DensePortsets %d: %d dense port sets, want %d", dense, got, wantSlots)
		}
		if allowed := checkPorts(t, d, ifindex, ep, 1); allowed < 1000 || allowed > 3*65536-1000 {
			t.Errorf("DensePortsets %d: %d of %d frames allowed: the policy does not exercise both verdicts", dense, allowed, 3*65536)
		}
		// Frames without ports (a later fragment's first judgement is
		// not on ports) still find the port-less UDP entry in the trie.
		frag := packet.Build(packet.Spec{Src: peerIP, Dst: podIP, Protocol: policy.UDP, SrcPort: 1, DstPort: 2,
			IPv4: packet.IPv4{FragmentOffset: 8}})
		if got, want := runFrame(t, d, policy.Ingress, ifindex, frag), policy.Evaluate(ep, policy.Ingress, frag); got != want.Allowed {
			t.Errorf("DensePortsets %d: later UDP fragment allowed=%v, the evaluator says %v", dense, got, want)
		}
	}
}

func TestDensePortSlotsAreReusedAndRunOut(t *testing.T) {
	d := newDataplane(t, Config{DensePortsets: 2, DensePortEntries: 3})
	ifindexes := []int{dummyLink(t), dummyLink(t), dummyLink(t)}
	policies := []*policy.Endpoint{manyPorts(10, 40), manyPorts(11, 40), manyPorts(12, 40)}
	for i, ifindex := range ifindexes {
		if _, err := d.SetPolicy(ifindex, policies[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Two slots: the third set lives in the trie only.
	if got := denseSlotsUsed(t, d); got != 2 {
		t.Fatalf("%d dense port sets, want 2", got)
	}
	for i, ifindex := range ifindexes {
		checkPorts(t, d, ifindex, policies[i], 5)
	}
	// A new set takes a freed slot: nothing of the old table may show.
	for round := range 4 {
		i := round % 2
		if err := d.RemovePolicy(ifindexes[i]); err != nil {
			t.Fatal(err)
		}
		flushNow(t, d)
		if got := denseSlotsUsed(t, d); got != 1 {
			t.Fatalf("round %d: %d dense port sets after a removal, want 1", round, got)
		}
		policies[i] = manyPorts(uint64(20+round), 40)
		if _, err := d.SetPolicy(ifindexes[i], policies[i]); err != nil {
			t.Fatal(err)
		}
		if got := denseSlotsUsed(t, d); got != 2 {
			t.Fatalf("round %d: %d dense port sets, want 2", round, got)
		}
		for j, ifindex := range ifindexes {
			checkPorts(t, d, ifindex, policies[j], 7)
		}
	}

	// A restarted dataplane knows which slots are taken.
	reopened := reopen(t, d)
	if got := denseSlotsUsed(t, reopened); got != 2 {
		t.Errorf("after reopening: %d dense port sets, want 2", got)
	}
	if _, err := reopened.SetPolicy(ifindexes[2], manyPorts(99, 40)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		checkPorts(t, reopened, ifindexes[i], policies[i], 7)
	}
}

package dataplane

import (
	"net/netip"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

var (
	podIP    = netip.MustParseAddr("10.0.0.2")
	peerIP   = netip.MustParseAddr("10.0.1.5")
	otherIP  = netip.MustParseAddr("192.0.2.9")
	podIP6   = netip.MustParseAddr("fd00::2")
	peerIP6  = netip.MustParseAddr("fd00:1::5")
	otherIP6 = netip.MustParseAddr("fe80::9")
)

func tcp(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	return packet.Build(packet.Spec{Src: src, Dst: dst, Protocol: policy.TCP, SrcPort: sport, DstPort: dport, TCPFlags: flags})
}

func udp(src, dst netip.Addr, sport, dport uint16) []byte {
	return packet.Build(packet.Spec{Src: src, Dst: dst, Protocol: policy.UDP, SrcPort: sport, DstPort: dport})
}

// ndp is an ICMPv6 message of type typ with hop limit hopLimit, cut to
// icmpBytes bytes of ICMPv6 when > 0.
func ndp(src, dst netip.Addr, typ, hopLimit uint8, icmpBytes int) []byte {
	s := packet.Spec{Src: src, Dst: dst, Protocol: policy.ICMPv6, HopLimit: hopLimit, ICMP: packet.ICMP{Type: typ}, Payload: make([]byte, 16)}
	if icmpBytes > 0 {
		s.Malform.L4Bytes = packet.Int(icmpBytes)
	}
	return packet.Build(s)
}

func webPolicy() *policy.Endpoint {
	return &policy.Endpoint{
		Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 10, CIDR: netip.MustParsePrefix("10.0.1.0/24"), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}}},
			{ID: 11, CIDR: netip.MustParsePrefix("fd00:1::/64"), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}}},
		}},
		Egress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 20, CIDR: netip.MustParsePrefix("0.0.0.0/0"), Except: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
				Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53}}},
		}},
	}
}

func TestUnpolicedEndpointPassesEverything(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if !runFrame(t, d, policy.Ingress, ifindex, tcp(otherIP, podIP, 1, 2, packet.SYN)) {
		t.Fatal("endpoint without policy dropped a packet")
	}
}

func TestStatelessVerdictsAndCounters(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	cases := []verdictStep{
		{"ingress tcp 80 from allowed peer", policy.Ingress, tcp(peerIP, podIP, 40000, 80, packet.SYN), true},
		{"ingress tcp 81", policy.Ingress, tcp(peerIP, podIP, 40001, 81, packet.SYN), false},
		{"ingress from other peer", policy.Ingress, tcp(otherIP, podIP, 40002, 80, packet.SYN), false},
		{"ingress IPv6 tcp 80", policy.Ingress, tcp(peerIP6, podIP6, 40003, 80, packet.SYN), true},
		{"ingress ARP", policy.Ingress, packet.ARP(peerIP, podIP), true},
		{"ingress neighbour solicitation", policy.Ingress, ndp(otherIP6, podIP6, 135, 255, 0), true},
		{"egress neighbour advertisement", policy.Egress, ndp(podIP6, otherIP6, 136, 255, 0), true},
		{"egress router solicitation, 4 bytes", policy.Egress, ndp(podIP6, otherIP6, 133, 255, 4), true},
		{"ingress router advertisement", policy.Ingress, ndp(otherIP6, podIP6, 134, 255, 0), true},
		{"ingress neighbour solicitation, hop limit 254", policy.Ingress, ndp(otherIP6, podIP6, 135, 254, 0), false},
		{"ingress redirect (137)", policy.Ingress, ndp(otherIP6, podIP6, 137, 255, 0), false},
		{"ingress neighbour solicitation, 3 bytes", policy.Ingress, ndp(otherIP6, podIP6, 135, 255, 3), false},
		{"egress dns", policy.Egress, udp(podIP, peerIP, 5000, 53), true},
		{"egress dns to except", policy.Egress, udp(podIP, otherIP, 5001, 53), false},
		{"egress IPv6 dns: IPv4 rule only", policy.Egress, udp(podIP6, peerIP6, 5002, 53), false},
		{"VLAN tagged", policy.Egress, packet.Build(packet.Spec{Src: podIP, Dst: peerIP, Protocol: policy.UDP, DstPort: 53, VLANs: []uint16{5}}), false},
	}
	var wantAllow, wantDeny [2]uint64
	for _, tc := range cases {
		got := runFrame(t, d, tc.dir, ifindex, tc.frame)
		if got != tc.want {
			t.Errorf("%s: allowed=%v, want %v", tc.name, got, tc.want)
		}
		if ref := policy.Evaluate(webPolicy(), tc.dir, tc.frame); ref.Allowed != tc.want {
			t.Errorf("%s: reference says %v", tc.name, ref)
		}
		if got {
			wantAllow[tc.dir]++
		} else {
			wantDeny[tc.dir]++
		}
	}
	c, err := d.Counters(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	for dir, dc := range []DirCounters{c.Ingress, c.Egress} {
		if dc.AllowPackets != wantAllow[dir] || dc.DenyPackets != wantDeny[dir] || dc.AllowBytes == 0 || dc.DenyBytes == 0 {
			t.Errorf("%v counters %+v, want %d allowed and %d denied", policy.Dir(dir), dc, wantAllow[dir], wantDeny[dir])
		}
	}
}

package policy_test

import (
	"net/netip"

	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// ndp is an ICMPv6 message of type typ with hop limit 255 from peer6.
func ndp(typ uint8) packet.Spec {
	return with(v6(policy.ICMPv6, 0), func(s *packet.Spec) {
		s.HopLimit = 255
		s.ICMP = packet.ICMP{Type: typ}
		s.Payload = make([]byte, 16) // the target address of a neighbour solicitation
	})
}

func TestEvaluateNeighborDiscovery(t *testing.T) {
	const (
		allow = true
		drop  = false
	)
	nd := policy.ReasonNeighborDiscovery
	noRule := policy.ReasonNoRule
	icmp6Only := []policy.Rule{{ID: 9, CIDR: cidr("::/0"), Ports: ports(all(policy.ICMPv6))}}
	cases := []struct {
		name   string
		spec   packet.Spec
		rules  []policy.Rule
		allow  bool
		reason policy.Reason
		rule   uint32
	}{
		{name: "router solicitation", spec: ndp(133), allow: allow, reason: nd},
		{name: "router advertisement", spec: ndp(134), allow: allow, reason: nd},
		{name: "neighbour solicitation", spec: ndp(135), allow: allow, reason: nd},
		{name: "neighbour advertisement", spec: ndp(136), allow: allow, reason: nd},
		{name: "neighbour solicitation from ::", spec: with(ndp(135), func(s *packet.Spec) { s.Src = netip.IPv6Unspecified() }), allow: allow, reason: nd},
		{name: "exactly 4 bytes of ICMPv6", spec: with(ndp(135), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(4) }), allow: allow, reason: nd},
		{name: "behind a destination options header", spec: with(ndp(136), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(60) }), allow: allow, reason: nd},
		{name: "first fragment", spec: with(ndp(135), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.Fragment, MoreFragments: true, ID: 5}}
		}), allow: allow, reason: nd},
		{name: "rule 6 comes before the rules", spec: ndp(135), rules: icmp6Only, allow: allow, reason: nd},

		{name: "hop limit 254", spec: with(ndp(135), func(s *packet.Spec) { s.HopLimit = 254 }), allow: drop, reason: noRule},
		{name: "hop limit 1", spec: with(ndp(136), func(s *packet.Spec) { s.HopLimit = 1 }), allow: drop, reason: noRule},
		{name: "type 132", spec: ndp(132), allow: drop, reason: noRule},
		{name: "type 137 (redirect)", spec: ndp(137), allow: drop, reason: noRule},
		{name: "echo request with hop limit 255", spec: ndp(packet.ICMPv6EchoRequest), allow: drop, reason: noRule},
		{name: "3 bytes of ICMPv6", spec: with(ndp(135), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(3) }), allow: drop, reason: noRule},
		{name: "no ICMPv6 bytes", spec: with(ndp(135), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(0) }), allow: drop, reason: noRule},
		{name: "later fragment", spec: with(ndp(135), func(s *packet.Spec) { s.IPv6.ExtHeaders = []packet.ExtHeader{laterFragment6(1)} }), allow: drop, reason: noRule},
		{name: "ICMPv4 type 135 with TTL 255", spec: with(v4(policy.ICMP, 0), func(s *packet.Spec) {
			s.HopLimit = 255
			s.ICMP = packet.ICMP{Type: 135}
		}), allow: drop, reason: noRule},
		{name: "protocol ICMP (1) in IPv6", spec: with(ndp(135), func(s *packet.Spec) { s.Protocol = policy.ICMP }), allow: drop, reason: noRule},
		{name: "payload length past the frame", spec: with(ndp(135), func(s *packet.Spec) { s.Malform.PayloadLength = packet.Int(200) }), allow: drop, reason: policy.ReasonMalformed},
		{name: "near miss still allowed by a rule", spec: with(ndp(135), func(s *packet.Spec) { s.HopLimit = 254 }), rules: icmp6Only, allow: allow, reason: policy.ReasonRule, rule: 9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frame := packet.Build(tc.spec)
			for _, dir := range []policy.Dir{policy.Ingress, policy.Egress} {
				ep := &policy.Endpoint{}
				d := ep.Of(dir)
				d.Isolated, d.Rules = true, tc.rules
				v := policy.Evaluate(ep, dir, frame)
				if v.Allowed != tc.allow || v.Reason != tc.reason || v.RuleID != tc.rule {
					t.Fatalf("%v: verdict %q (reason %v, rule %d), want allowed %v, reason %v, rule %d; packet %v",
						dir, v, v.Reason, v.RuleID, tc.allow, tc.reason, tc.rule, v.Packet)
				}
				if v.Packet.NeighborDiscovery != (tc.reason == nd) {
					t.Fatalf("%v: Packet.NeighborDiscovery = %v", dir, v.Packet.NeighborDiscovery)
				}
			}
		})
	}
	if got := policy.Evaluate(&policy.Endpoint{Ingress: policy.Direction{Isolated: true}}, policy.Ingress, packet.Build(ndp(135))).String(); got != "allow: neighbour discovery" {
		t.Errorf("verdict string %q", got)
	}
}

package policygen_test

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/policygen"
)

func TestDeterministicFromSeed(t *testing.T) {
	for seed := range uint64(20) {
		a, b := policygen.New(seed), policygen.New(seed)
		epA, epB := policygen.Endpoint(a), policygen.Endpoint(b)
		if !reflect.DeepEqual(epA, epB) {
			t.Fatalf("seed %d: endpoints differ", seed)
		}
		for i := range 50 {
			dir := policy.Dir(i % 2)
			if fa, fb := policygen.Frame(a, epA, dir), policygen.Frame(b, epB, dir); !bytes.Equal(fa, fb) {
				t.Fatalf("seed %d: frame %d differs", seed, i)
			}
			if fa, fb := policygen.Malformed(a, epA, dir), policygen.Malformed(b, epB, dir); !bytes.Equal(fa, fb) {
				t.Fatalf("seed %d: malformed frame %d differs", seed, i)
			}
		}
	}
	if reflect.DeepEqual(policygen.Endpoint(policygen.New(1)), policygen.Endpoint(policygen.New(2))) {
		t.Fatal("seeds 1 and 2 give the same endpoint")
	}
}

func TestEndpointShape(t *testing.T) {
	seen := map[string]int{}
	for seed := range uint64(300) {
		ep := policygen.Endpoint(policygen.New(seed))
		for _, d := range []policy.Direction{ep.Ingress, ep.Egress} {
			if d.Isolated {
				seen["isolated"]++
			} else {
				seen["not isolated"]++
			}
			if len(d.Rules) >= 100 {
				seen["100+ rules"]++
			}
			if len(d.Rules) == 0 {
				seen["no rules"]++
			}
			ids := map[uint32]bool{}
			for i, rule := range d.Rules {
				if ids[rule.ID] {
					t.Fatalf("seed %d: duplicate rule ID %d", seed, rule.ID)
				}
				ids[rule.ID] = true
				if !rule.CIDR.IsValid() || rule.CIDR != rule.CIDR.Masked() {
					t.Fatalf("seed %d: CIDR %v invalid or unmasked", seed, rule.CIDR)
				}
				family := "v4"
				if rule.CIDR.Addr().Is6() {
					family = "v6"
				}
				switch rule.CIDR.Bits() {
				case 0:
					seen[family+" /0"]++
				case rule.CIDR.Addr().BitLen():
					seen[family+" host"]++
				}
				if rule.CIDR.Addr().Is4In6() {
					seen["v4-mapped"]++
				}
				for _, except := range rule.Except {
					seen["except"]++
					if except != except.Masked() || except.Bits() < rule.CIDR.Bits() || !rule.CIDR.Contains(except.Addr()) {
						t.Fatalf("seed %d: except %v not inside %v", seed, except, rule.CIDR)
					}
				}
				for _, other := range d.Rules[:i] {
					if other.CIDR != rule.CIDR && other.CIDR.Overlaps(rule.CIDR) {
						seen["overlapping"]++
						break
					}
				}
				if len(rule.Ports) == 0 {
					seen["no ports"]++
				}
				for _, pr := range rule.Ports {
					switch {
					case pr.Port != 0 && pr.EndPort != 0 && pr.EndPort < pr.Port:
						t.Fatalf("seed %d: invalid port range %+v", seed, pr)
					case pr.Port == 0 && pr.EndPort != 0:
						seen["all-ports with an EndPort"]++
					case pr.Port == 0:
						seen["all-ports"]++
					case pr.EndPort == 0:
						seen["single port"]++
					default:
						seen["range"]++
					}
					switch pr.Protocol {
					case policy.TCP, policy.UDP, policy.SCTP:
						seen["TCP/UDP/SCTP"]++
					default:
						seen["other protocol"]++
					}
				}
			}
		}
	}
	for _, want := range []string{"isolated", "not isolated", "100+ rules", "no rules", "v4 /0", "v6 /0", "v4 host", "v6 host",
		"v4-mapped", "except", "overlapping", "no ports", "all-ports", "all-ports with an EndPort", "single port", "range", "TCP/UDP/SCTP", "other protocol"} {
		if seen[want] == 0 {
			t.Errorf("300 endpoints have no %q", want)
		}
	}
	t.Logf("%v", seen)
}

func TestPacketsAreInteresting(t *testing.T) {
	reasons := map[policy.Reason]int{}
	features := map[string]int{}
	const n = 20000
	for seed := range uint64(n / 100) {
		r := policygen.New(seed)
		ep := policygen.Endpoint(r)
		ep.Ingress.Isolated, ep.Egress.Isolated = true, true
		for i := range 100 {
			dir := policy.Dir(i % 2)
			frame := policygen.Frame(r, ep, dir)
			v := policy.Evaluate(ep, dir, frame)
			reasons[v.Reason]++
			p := v.Packet
			switch {
			case v.Reason == policy.ReasonMalformed:
				t.Fatalf("seed %d: Packet made a malformed frame: %v", seed, v)
			case p.LaterFragment:
				features["later fragment"]++
			case p.HasPort:
				features["port"]++
			case p.IsIPv4() || p.IsIPv6():
				features["port-less"]++
			}
			if p.ExtensionHeaders > 0 {
				features["extension headers"]++
			}
			if p.Peer.Is4In6() {
				features["v4-mapped peer"]++
			}
			if p.IsIPv6() && p.Protocol == policy.ICMPv6 && !p.NeighborDiscovery && !p.LaterFragment {
				switch hopLimit := frame[14+7]; hopLimit {
				case 255:
					features["neighbour discovery near miss by type or length"]++
				case 254, 1:
					features["neighbour discovery near miss by hop limit"]++
				}
			}
		}
	}
	for _, reason := range []policy.Reason{policy.ReasonRule, policy.ReasonNoRule, policy.ReasonARP, policy.ReasonNotIP, policy.ReasonNeighborDiscovery} {
		if reasons[reason] == 0 {
			t.Errorf("no packet decided by %v", reason)
		}
	}
	// Packets aimed at rules should be allowed often but far from always.
	if allowed := reasons[policy.ReasonRule]; allowed < n/5 || allowed > n*4/5 {
		t.Errorf("%d of %d packets allowed by a rule", allowed, n)
	}
	for _, want := range []string{"later fragment", "port", "port-less", "extension headers", "v4-mapped peer",
		"neighbour discovery near miss by type or length", "neighbour discovery near miss by hop limit"} {
		if features[want] == 0 {
			t.Errorf("no packet with %s", want)
		}
	}
	t.Logf("reasons %v, features %v", reasons, features)
}

func TestMalformedMostlyDropped(t *testing.T) {
	const n = 20000
	broken := 0
	for seed := range uint64(n / 100) {
		r := policygen.New(seed)
		ep := policygen.Endpoint(r)
		for i := range 100 {
			_, err := policy.ParseFrame(policygen.Malformed(r, ep, policy.Dir(i%2)), policy.Dir(i%2))
			if errors.Is(err, policy.ErrMalformed) || errors.Is(err, policy.ErrNotIP) {
				broken++
			}
		}
	}
	if broken < n/2 {
		t.Errorf("only %d of %d malformed frames fail to parse", broken, n)
	}
	t.Logf("%d of %d malformed frames fail to parse", broken, n)
}

func TestAddressHelpers(t *testing.T) {
	cases := []struct{ prefix, first, last string }{
		{"10.1.0.0/16", "10.1.0.0", "10.1.255.255"},
		{"10.1.2.3/32", "10.1.2.3", "10.1.2.3"},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255"},
		{"10.0.0.0/9", "10.0.0.0", "10.127.255.255"},
		{"fc00::/7", "fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"fd00::/15", "fd00::", "fd01:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	}
	r := policygen.New(1)
	for _, tc := range cases {
		p := netip.MustParsePrefix(tc.prefix)
		if got := policygen.First(p); got != netip.MustParseAddr(tc.first) {
			t.Errorf("First(%v) = %v", p, got)
		}
		if got := policygen.Last(p); got != netip.MustParseAddr(tc.last) {
			t.Errorf("Last(%v) = %v", p, got)
		}
		for range 100 {
			if a := policygen.RandomIn(r, p); !p.Contains(a) {
				t.Fatalf("RandomIn(%v) = %v", p, a)
			}
			if in := policygen.Inside(r, p); in.Bits() < p.Bits() || !p.Contains(in.Addr()) {
				t.Fatalf("Inside(%v) = %v", p, in)
			}
		}
	}
}

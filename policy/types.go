// Package policy describes what one endpoint (a pod interface) may send and
// receive, independently of Kubernetes objects and of how the dataplane
// stores it. The dataplane compiles it into eBPF maps; Evaluate is the
// reference semantics the compiled form is tested against.
package policy

import "net/netip"

// Protocol is an IP protocol number (IANA), e.g. TCP 6, UDP 17, SCTP 132.
type Protocol uint8

const (
	ICMP   Protocol = 1
	TCP    Protocol = 6
	UDP    Protocol = 17
	ICMPv6 Protocol = 58
	SCTP   Protocol = 132
)

// PortRange allows one protocol on a port, a range of ports, or all ports.
//
//	Port == 0:               every port of Protocol
//	Port != 0, EndPort == 0: the single port Port
//	Port != 0, EndPort != 0: Port..EndPort inclusive (EndPort >= Port)
type PortRange struct {
	Protocol Protocol
	Port     uint16
	EndPort  uint16
}

// Rule allows traffic with a peer address inside CIDR and outside every
// Except, on any of Ports. A rule with no Ports allows every protocol and
// port. ID identifies the rule (and through it the policy) in events.
type Rule struct {
	ID     uint32
	CIDR   netip.Prefix
	Except []netip.Prefix
	Ports  []PortRange
}

// Direction is one direction of an endpoint. When Isolated is false every
// packet passes; when true only what some Rule allows passes.
type Direction struct {
	Isolated bool
	Rules    []Rule
}

// Endpoint is the whole policy of one endpoint. Ingress applies to packets
// sent to the endpoint (the peer is their source), Egress to packets the
// endpoint sends (the peer is their destination). The port matched is
// always the destination port of the packet.
type Endpoint struct {
	Ingress Direction
	Egress  Direction
}

// Dir names a direction relative to the endpoint.
type Dir uint8

const (
	Ingress Dir = iota
	Egress
)

func (d Dir) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Of returns the endpoint's policy for direction d.
func (e *Endpoint) Of(d Dir) *Direction {
	if d == Egress {
		return &e.Egress
	}
	return &e.Ingress
}

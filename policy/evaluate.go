package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// EtherTypes the verdict rules know.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeIPv6 uint16 = 0x86DD
)

// IPv6 extension header numbers walked by the verdict rules, and No Next Header.
const (
	HopByHop     Protocol = 0
	Routing      Protocol = 43
	Fragment     Protocol = 44
	AH           Protocol = 51
	NoNextHeader Protocol = 59
	DestOptions  Protocol = 60
)

// MaxExtensionHeaders is the most IPv6 extension headers a packet may carry.
const MaxExtensionHeaders = 8

// ErrMalformed is the Kind of ParseFrame errors for frames the rules drop
// as malformed; ErrNotIP for EtherTypes other than IPv4, IPv6 and ARP.
var (
	ErrMalformed = errors.New("malformed")
	ErrNotIP     = errors.New("not IP")
)

// ParseError is the error ParseFrame returns. Its text is formatted only
// when asked for, so that rejecting a frame stays cheap.
type ParseError struct {
	// Kind is ErrMalformed or ErrNotIP.
	Kind   error
	format string
	args   [4]int
	nargs  int
}

func (e *ParseError) Error() string {
	args := make([]any, e.nargs)
	for i := range args {
		args[i] = e.args[i]
	}
	return e.Kind.Error() + ": " + fmt.Sprintf(e.format, args...)
}

func (e *ParseError) Unwrap() error { return e.Kind }

func malformed(format string, args ...int) error {
	e := &ParseError{Kind: ErrMalformed, format: format, nargs: len(args)}
	copy(e.args[:], args)
	return e
}

// Packet holds the facts of a frame the verdict depends on.
type Packet struct {
	EtherType uint16
	// Src, Dst and Peer are invalid for frames that are not IP.
	Src, Dst netip.Addr
	// Peer is Src for Ingress, Dst for Egress.
	Peer     netip.Addr
	Protocol Protocol
	// HasPort is false for port-less packets; Port is then 0.
	HasPort bool
	Port    uint16
	// LaterFragment: a fragment with a non-zero offset.
	LaterFragment bool
	// ExtensionHeaders counts the IPv6 extension headers walked.
	ExtensionHeaders int
	// NeighborDiscovery: an IPv6 neighbour discovery message by rule 6
	// (ICMPv6 type 133-136, hop limit 255, not a later fragment).
	NeighborDiscovery bool
}

// IsIPv4 reports whether the packet is an IPv4 packet.
func (p *Packet) IsIPv4() bool { return p.EtherType == EtherTypeIPv4 }

// IsIPv6 reports whether the packet is an IPv6 packet.
func (p *Packet) IsIPv6() bool { return p.EtherType == EtherTypeIPv6 }

func (p Packet) String() string {
	var family string
	switch p.EtherType {
	case EtherTypeARP:
		return "ARP"
	case EtherTypeIPv4:
		family = "IPv4"
	case EtherTypeIPv6:
		family = "IPv6"
	default:
		return fmt.Sprintf("EtherType 0x%04x", p.EtherType)
	}
	s := fmt.Sprintf("%s %s %s -> %s", family, protocolName(p.Protocol), p.Src, p.Dst)
	switch {
	case p.HasPort:
		s += fmt.Sprintf(" port %d", p.Port)
	case p.LaterFragment:
		s += " later fragment, port-less"
	default:
		s += " port-less"
	}
	return s
}

func protocolName(p Protocol) string {
	switch p {
	case ICMP:
		return "ICMP"
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case ICMPv6:
		return "ICMPv6"
	case SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("protocol %d", uint8(p))
}

// Reason says which verdict rule decided a packet.
type Reason uint8

const (
	// ReasonNotIsolated: the direction is not isolated (allow).
	ReasonNotIsolated Reason = iota + 1
	// ReasonARP: an ARP frame (allow).
	ReasonARP
	// ReasonRule: Verdict.RuleID allows the packet (allow).
	ReasonRule
	// ReasonNoRule: no rule allows the packet (drop).
	ReasonNoRule
	// ReasonNotIP: an EtherType other than IPv4, IPv6 and ARP (drop).
	ReasonNotIP
	// ReasonMalformed: the frame breaks a parsing rule (drop).
	ReasonMalformed
	// ReasonNeighborDiscovery: an IPv6 neighbour discovery message (allow).
	ReasonNeighborDiscovery
)

func (r Reason) String() string {
	switch r {
	case ReasonNotIsolated:
		return "not isolated"
	case ReasonARP:
		return "ARP"
	case ReasonRule:
		return "rule"
	case ReasonNoRule:
		return "no rule matches"
	case ReasonNotIP:
		return "not IP"
	case ReasonMalformed:
		return "malformed"
	case ReasonNeighborDiscovery:
		return "neighbour discovery"
	}
	return fmt.Sprintf("reason %d", uint8(r))
}

// Verdict is the decision on one packet and why it was taken.
type Verdict struct {
	Allowed bool
	Reason  Reason
	// RuleID is the first rule, in Rules order, that allows the packet
	// (Reason == ReasonRule).
	RuleID uint32
	// Err is the ParseFrame error, if any.
	Err    error
	Packet Packet
}

// String explains the verdict, e.g. "allow: rule 7" or
// "drop: malformed: IPv4 IHL 3 < 5".
func (v Verdict) String() string {
	action := "drop"
	if v.Allowed {
		action = "allow"
	}
	switch {
	case v.Reason == ReasonRule:
		return fmt.Sprintf("%s: rule %d", action, v.RuleID)
	case v.Err != nil && (v.Reason == ReasonMalformed || v.Reason == ReasonNotIP):
		return fmt.Sprintf("%s: %v", action, v.Err)
	}
	return fmt.Sprintf("%s: %s", action, v.Reason)
}

// Evaluate decides frame in direction dir of ep by the verdict rules of the
// package documentation.
func Evaluate(ep *Endpoint, dir Dir, frame []byte) Verdict {
	pkt, err := ParseFrame(frame, dir)
	v := Verdict{Err: err, Packet: pkt}
	direction := ep.Of(dir)
	switch {
	case !direction.Isolated:
		v.Allowed, v.Reason = true, ReasonNotIsolated
	case errors.Is(err, ErrNotIP):
		v.Reason = ReasonNotIP
	case err != nil:
		v.Reason = ReasonMalformed
	case pkt.EtherType == EtherTypeARP:
		v.Allowed, v.Reason = true, ReasonARP
	case pkt.NeighborDiscovery:
		v.Allowed, v.Reason = true, ReasonNeighborDiscovery
	default:
		v.Reason = ReasonNoRule
		for i := range direction.Rules {
			if ruleAllows(&direction.Rules[i], &pkt) {
				v.Allowed, v.Reason, v.RuleID = true, ReasonRule, direction.Rules[i].ID
				break
			}
		}
	}
	return v
}

func ruleAllows(r *Rule, p *Packet) bool {
	if !r.CIDR.Contains(p.Peer) {
		return false
	}
	for _, except := range r.Except {
		if except.Contains(p.Peer) {
			return false
		}
	}
	if len(r.Ports) == 0 {
		return true
	}
	for _, pr := range r.Ports {
		if pr.Protocol != p.Protocol {
			continue
		}
		if pr.Port == 0 {
			return true
		}
		if !p.HasPort {
			continue
		}
		end := pr.EndPort
		if end == 0 {
			end = pr.Port
		}
		if pr.Port <= p.Port && p.Port <= end {
			return true
		}
	}
	return false
}

const ethernetHeaderLen = 14

// ParseFrame extracts the facts the verdict rules use from an Ethernet
// frame. An ARP frame yields a Packet with only EtherType set. The error
// wraps ErrNotIP for other EtherTypes and ErrMalformed for frames the rules
// drop (both as a *ParseError); the Packet then holds what was parsed
// before the fault.
func ParseFrame(frame []byte, dir Dir) (Packet, error) {
	var p Packet
	if len(frame) < ethernetHeaderLen {
		return p, malformed("Ethernet frame of %d bytes, need 14", len(frame))
	}
	p.EtherType = binary.BigEndian.Uint16(frame[12:14])
	ip := frame[ethernetHeaderLen:]
	var payload []byte
	var err error
	switch p.EtherType {
	case EtherTypeARP:
		return p, nil
	case EtherTypeIPv4:
		payload, err = parseIPv4(ip, &p)
	case EtherTypeIPv6:
		payload, err = parseIPv6(ip, &p)
	default:
		format := "EtherType 0x%04x"
		switch p.EtherType {
		case 0x8100, 0x88A8, 0x9100:
			format = "EtherType 0x%04x (VLAN tag)"
		}
		return p, &ParseError{Kind: ErrNotIP, format: format, args: [4]int{int(p.EtherType)}, nargs: 1}
	}
	if p.Src.IsValid() {
		p.Peer = p.Src
		if dir == Egress {
			p.Peer = p.Dst
		}
	}
	if err != nil {
		return p, err
	}
	if p.LaterFragment {
		return p, nil
	}
	if p.IsIPv6() && p.Protocol == ICMPv6 {
		p.NeighborDiscovery = isNeighborDiscovery(frame[ethernetHeaderLen+7], payload)
	}
	var need int
	var short string
	switch p.Protocol {
	case TCP:
		need, short = 20, "TCP header needs 20 bytes, IP payload has %d"
	case UDP:
		need, short = 8, "UDP header needs 8 bytes, IP payload has %d"
	case SCTP:
		need, short = 12, "SCTP header needs 12 bytes, IP payload has %d"
	default:
		return p, nil
	}
	if len(payload) < need {
		return p, malformed(short, len(payload))
	}
	p.HasPort = true
	p.Port = binary.BigEndian.Uint16(payload[2:4])
	return p, nil
}

// ICMPv6 neighbour discovery message types: router solicitation and
// advertisement, neighbour solicitation and advertisement.
const (
	firstNeighborDiscoveryType = 133
	lastNeighborDiscoveryType  = 136
	neighborDiscoveryHopLimit  = 255
)

// isNeighborDiscovery applies rule 6 to an ICMPv6 packet (not a later
// fragment) with this hop limit and ICMPv6 message.
func isNeighborDiscovery(hopLimit uint8, icmp []byte) bool {
	return hopLimit == neighborDiscoveryHopLimit && len(icmp) >= 4 &&
		icmp[0] >= firstNeighborDiscoveryType && icmp[0] <= lastNeighborDiscoveryType
}

// parseIPv4 fills p from the IPv4 packet ip and returns the IP payload.
func parseIPv4(ip []byte, p *Packet) ([]byte, error) {
	if len(ip) < 20 {
		return nil, malformed("IPv4 header needs 20 bytes, have %d", len(ip))
	}
	if version := ip[0] >> 4; version != 4 {
		return nil, malformed("IP version %d in an IPv4 EtherType frame", int(version))
	}
	ihl := int(ip[0] & 0x0f)
	if ihl < 5 {
		return nil, malformed("IPv4 IHL %d < 5", ihl)
	}
	totalLength := int(binary.BigEndian.Uint16(ip[2:4]))
	if ihl*4 > totalLength {
		return nil, malformed("IPv4 header length %d > total length %d", ihl*4, totalLength)
	}
	if totalLength > len(ip) {
		return nil, malformed("IPv4 total length %d > %d bytes present", totalLength, len(ip))
	}
	p.Src = netip.AddrFrom4([4]byte(ip[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
	p.Protocol = Protocol(ip[9])
	p.LaterFragment = binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0
	return ip[ihl*4 : totalLength], nil
}

// parseIPv6 fills p from the IPv6 packet ip, walking its extension headers,
// and returns the payload after them.
func parseIPv6(ip []byte, p *Packet) ([]byte, error) {
	if len(ip) < 40 {
		return nil, malformed("IPv6 header needs 40 bytes, have %d", len(ip))
	}
	if version := ip[0] >> 4; version != 6 {
		return nil, malformed("IP version %d in an IPv6 EtherType frame", int(version))
	}
	end := 40 + int(binary.BigEndian.Uint16(ip[4:6]))
	if end > len(ip) {
		return nil, malformed("IPv6 payload length %d > %d bytes present", end-40, len(ip)-40)
	}
	p.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
	next := Protocol(ip[6])
	offset := 40
	for {
		switch next {
		case HopByHop, Routing, DestOptions, AH, Fragment:
		default:
			p.Protocol = next
			return ip[offset:end], nil
		}
		if next == HopByHop && p.ExtensionHeaders > 0 {
			return nil, malformed("IPv6 Hop-by-Hop header after %d other extension headers", p.ExtensionHeaders)
		}
		if p.ExtensionHeaders == MaxExtensionHeaders {
			return nil, malformed("more than %d IPv6 extension headers", MaxExtensionHeaders)
		}
		p.ExtensionHeaders++
		size := 8
		if next != Fragment {
			if offset+2 > end {
				return nil, malformed("IPv6 extension header %d truncated at offset %d", int(next), offset)
			}
			if next == AH {
				size = (int(ip[offset+1]) + 2) * 4
			} else {
				size = (int(ip[offset+1]) + 1) * 8
			}
		}
		if offset+size > end {
			return nil, malformed("IPv6 extension header %d of %d bytes at offset %d exceeds payload end %d", int(next), size, offset, end)
		}
		if next == Fragment && binary.BigEndian.Uint16(ip[offset+2:offset+4])>>3 != 0 {
			p.LaterFragment = true
			p.Protocol = Protocol(ip[offset])
			return ip[offset+size : end], nil
		}
		next = Protocol(ip[offset])
		offset += size
	}
}

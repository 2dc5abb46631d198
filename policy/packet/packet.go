// Package packet builds Ethernet frames for tests and benchmarks: IPv4 (with
// options and fragment fields) or IPv6 (with extension header chains)
// carrying TCP, UDP, SCTP, ICMP or ICMPv6 (echo, or errors quoting an inner
// packet), with correct lengths and checksums unless Spec.Malform overrides
// them.
package packet

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"

	"github.com/palisade-net/palisade/policy"
)

// Default MAC addresses (locally administered) used when Spec leaves them zero.
var (
	DefaultSrcMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	DefaultDstMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

// TCP flags.
const (
	FIN uint8 = 0x01
	SYN uint8 = 0x02
	RST uint8 = 0x04
	PSH uint8 = 0x08
	ACK uint8 = 0x10
)

// ICMP and ICMPv6 message types and codes.
const (
	ICMPv4EchoReply       uint8 = 0
	ICMPv4DestUnreachable uint8 = 3
	ICMPv4EchoRequest     uint8 = 8
	ICMPv4TimeExceeded    uint8 = 11
	// ICMPv4CodeFragNeeded is the Destination Unreachable code
	// "fragmentation needed and DF set"; ICMP.MTU is the next-hop MTU.
	ICMPv4CodeFragNeeded uint8 = 4

	ICMPv6DestUnreachable uint8 = 1
	// ICMPv6PacketTooBig: ICMP.MTU is the MTU.
	ICMPv6PacketTooBig         uint8 = 2
	ICMPv6TimeExceeded         uint8 = 3
	ICMPv6EchoRequest          uint8 = 128
	ICMPv6EchoReply            uint8 = 129
	ICMPv6NeighborSolicitation uint8 = 135
)

// Spec describes one frame. The zero value of every field is a sensible
// default; the IP family is Src's (Dst's if Src is unset, IPv4 if neither).
type Spec struct {
	SrcMAC, DstMAC [6]byte
	// VLANs are 802.1Q tag control values inserted after the MAC addresses.
	VLANs []uint16
	// EtherType overrides the one derived from the IP family.
	EtherType uint16

	Src, Dst netip.Addr
	Protocol policy.Protocol
	// HopLimit is the IPv4 TTL or IPv6 hop limit; 0 means 64.
	HopLimit uint8
	IPv4     IPv4
	IPv6     IPv6

	SrcPort, DstPort uint16
	TCPFlags         uint8
	ICMP             ICMP
	// Payload follows the L4 header (or is the whole IP payload for other
	// protocols).
	Payload []byte

	Malform Malform
}

// IPv4 holds IPv4 header fields.
type IPv4 struct {
	ID            uint16
	DontFragment  bool
	MoreFragments bool
	// FragmentOffset is in 8-byte units (13 bits).
	FragmentOffset uint16
	// Options are padded with zeros (End of Options) to a multiple of 4
	// bytes; IHL grows accordingly.
	Options []byte
}

// IPv6 holds IPv6 header fields and the extension header chain.
type IPv6 struct {
	TrafficClass uint8
	FlowLabel    uint32
	// ExtHeaders are chained in order; each next-header field names the
	// following header, the last one Spec.Protocol.
	ExtHeaders []ExtHeader
}

// ExtHeader is one IPv6 extension header (or any header of Type laid out
// as next-header, length, body).
type ExtHeader struct {
	Type policy.Protocol
	// Body follows the next-header and length bytes; it is padded with
	// zeros to the header's size unit (8 bytes, 4 for AH). Ignored for
	// Fragment headers.
	Body []byte
	// Fragment header fields. FragmentOffset is in 8-byte units.
	FragmentOffset uint16
	MoreFragments  bool
	ID             uint32
	// Len, when set, is written as the length byte instead of the computed
	// one (the header's real size does not change).
	Len *int
}

// ICMP holds ICMP or ICMPv6 fields (by Spec.Protocol).
type ICMP struct {
	Type, Code uint8
	// ID and Seq fill bytes 4-7 of messages without Inner (echo).
	ID, Seq uint16
	// MTU fills bytes 4-7 (ICMPv6) or 6-7 (ICMP) of messages with Inner.
	MTU uint32
	// Inner is the packet an error message quotes, from its IP header on.
	Inner *Spec
	// InnerBytes, when > 0, cuts the quoted packet to that many bytes.
	InnerBytes int
}

// Malform makes deliberately broken frames. Unset fields keep the frame
// well formed.
type Malform struct {
	// Version is written as the IP version nibble.
	Version *int
	// IHL is written as the IPv4 header length nibble.
	IHL *int
	// TotalLength is written as the IPv4 total length, PayloadLength as the
	// IPv6 payload length.
	TotalLength   *int
	PayloadLength *int
	// L4Bytes keeps only that many bytes of the L4 segment (header and
	// payload); the IP lengths agree with the shortened packet.
	L4Bytes *int
	// Trailer is appended after the IP packet (Ethernet padding).
	Trailer []byte
	// FrameBytes cuts the finished frame to that many bytes; no length
	// field is adjusted.
	FrameBytes *int
}

// Int returns a pointer to v, for the optional fields of Malform and ExtHeader.
func Int(v int) *int { return &v }

// Build returns the Ethernet frame s describes. It panics if Src and Dst are
// of different families (a mistake in the test, not a malformed packet).
func Build(s Spec) []byte {
	ip := IP(s)
	srcMAC, dstMAC := s.SrcMAC, s.DstMAC
	if srcMAC == [6]byte{} {
		srcMAC = DefaultSrcMAC
	}
	if dstMAC == [6]byte{} {
		dstMAC = DefaultDstMAC
	}
	frame := make([]byte, 0, 14+4*len(s.VLANs)+len(ip)+len(s.Malform.Trailer))
	frame = append(frame, dstMAC[:]...)
	frame = append(frame, srcMAC[:]...)
	for _, tci := range s.VLANs {
		frame = binary.BigEndian.AppendUint16(frame, 0x8100)
		frame = binary.BigEndian.AppendUint16(frame, tci)
	}
	etherType := s.EtherType
	if etherType == 0 {
		etherType = policy.EtherTypeIPv4
		if isIPv6(s) {
			etherType = policy.EtherTypeIPv6
		}
	}
	frame = binary.BigEndian.AppendUint16(frame, etherType)
	frame = append(frame, ip...)
	frame = append(frame, s.Malform.Trailer...)
	if n := s.Malform.FrameBytes; n != nil && *n >= 0 && *n < len(frame) {
		frame = frame[:*n]
	}
	return frame
}

// ARP returns an ARP request frame from sender asking for target (IPv4).
func ARP(sender, target netip.Addr) []byte {
	frame := make([]byte, 0, 42)
	frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	frame = append(frame, DefaultSrcMAC[:]...)
	frame = binary.BigEndian.AppendUint16(frame, policy.EtherTypeARP)
	frame = append(frame, 0, 1, 0x08, 0x00, 6, 4, 0, 1)
	frame = append(frame, DefaultSrcMAC[:]...)
	s4 := sender.As4()
	frame = append(frame, s4[:]...)
	frame = append(frame, 0, 0, 0, 0, 0, 0)
	t4 := target.As4()
	return append(frame, t4[:]...)
}

func isIPv6(s Spec) bool {
	if s.Src.IsValid() {
		return s.Src.Is6()
	}
	return s.Dst.Is6()
}

// IP returns the IP packet of s, without Ethernet header, trailer or frame cut.
func IP(s Spec) []byte {
	src, dst := s.Src, s.Dst
	v6 := isIPv6(s)
	if !src.IsValid() {
		src = unspecified(v6)
	}
	if !dst.IsValid() {
		dst = unspecified(v6)
	}
	if src.Is6() != dst.Is6() {
		panic(fmt.Sprintf("packet: Src %s and Dst %s are of different families", src, dst))
	}
	l4 := transport(s, src, dst)
	if n := s.Malform.L4Bytes; n != nil && *n >= 0 && *n < len(l4) {
		l4 = l4[:*n]
	}
	if v6 {
		return ipv6(s, src, dst, l4)
	}
	return ipv4(s, src, dst, l4)
}

func unspecified(v6 bool) netip.Addr {
	if v6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func hopLimit(s Spec) uint8 {
	if s.HopLimit == 0 {
		return 64
	}
	return s.HopLimit
}

func ipv4(s Spec, src, dst netip.Addr, l4 []byte) []byte {
	options := pad(s.IPv4.Options, 4)
	headerLen := 20 + len(options)
	version, ihl, totalLength := 4, headerLen/4, headerLen+len(l4)
	if s.Malform.Version != nil {
		version = *s.Malform.Version
	}
	if s.Malform.IHL != nil {
		ihl = *s.Malform.IHL
	}
	if s.Malform.TotalLength != nil {
		totalLength = *s.Malform.TotalLength
	}
	h := make([]byte, 20, headerLen+len(l4))
	h[0] = byte(version<<4) | byte(ihl&0x0f)
	binary.BigEndian.PutUint16(h[2:], uint16(totalLength))
	binary.BigEndian.PutUint16(h[4:], s.IPv4.ID)
	flags := s.IPv4.FragmentOffset & 0x1fff
	if s.IPv4.DontFragment {
		flags |= 0x4000
	}
	if s.IPv4.MoreFragments {
		flags |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:], flags)
	h[8] = hopLimit(s)
	h[9] = byte(s.Protocol)
	src4, dst4 := src.As4(), dst.As4()
	copy(h[12:], src4[:])
	copy(h[16:], dst4[:])
	h = append(h, options...)
	binary.BigEndian.PutUint16(h[10:], checksum(0, h))
	return append(h, l4...)
}

func ipv6(s Spec, src, dst netip.Addr, l4 []byte) []byte {
	var ext []byte
	for i, e := range s.IPv6.ExtHeaders {
		next := s.Protocol
		if i+1 < len(s.IPv6.ExtHeaders) {
			next = s.IPv6.ExtHeaders[i+1].Type
		}
		ext = append(ext, extHeader(e, next)...)
	}
	version, payloadLength := 6, len(ext)+len(l4)
	if s.Malform.Version != nil {
		version = *s.Malform.Version
	}
	if s.Malform.PayloadLength != nil {
		payloadLength = *s.Malform.PayloadLength
	}
	h := make([]byte, 40, 40+len(ext)+len(l4))
	binary.BigEndian.PutUint32(h[0:], uint32(version&0x0f)<<28|uint32(s.IPv6.TrafficClass)<<20|s.IPv6.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLength))
	h[6] = byte(s.Protocol)
	if len(s.IPv6.ExtHeaders) > 0 {
		h[6] = byte(s.IPv6.ExtHeaders[0].Type)
	}
	h[7] = hopLimit(s)
	src16, dst16 := src.As16(), dst.As16()
	copy(h[8:], src16[:])
	copy(h[24:], dst16[:])
	h = append(h, ext...)
	return append(h, l4...)
}

func extHeader(e ExtHeader, next policy.Protocol) []byte {
	var h []byte
	var length int
	switch e.Type {
	case policy.Fragment:
		h = make([]byte, 8)
		offset := e.FragmentOffset << 3
		if e.MoreFragments {
			offset |= 1
		}
		binary.BigEndian.PutUint16(h[2:], offset)
		binary.BigEndian.PutUint32(h[4:], e.ID)
	case policy.AH:
		body := e.Body
		if body == nil {
			body = make([]byte, 14) // reserved, SPI, sequence number, 4-byte ICV
		}
		h = pad(append([]byte{0, 0}, body...), 4)
		length = len(h)/4 - 2
	default:
		h = pad(append([]byte{0, 0}, e.Body...), 8)
		length = len(h)/8 - 1
	}
	if e.Len != nil {
		length = *e.Len
	}
	h[0] = byte(next)
	h[1] = byte(length)
	return h
}

// pad extends b with zeros to a multiple of unit bytes.
func pad(b []byte, unit int) []byte {
	if rem := len(b) % unit; rem != 0 {
		b = append(b, make([]byte, unit-rem)...)
	}
	return b
}

func transport(s Spec, src, dst netip.Addr) []byte {
	switch s.Protocol {
	case policy.TCP:
		h := make([]byte, 20, 20+len(s.Payload))
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		binary.BigEndian.PutUint32(h[4:], 1)
		h[12] = 5 << 4
		h[13] = s.TCPFlags
		binary.BigEndian.PutUint16(h[14:], 65535)
		h = append(h, s.Payload...)
		binary.BigEndian.PutUint16(h[16:], checksum(pseudoHeaderSum(src, dst, policy.TCP, len(h)), h))
		return h
	case policy.UDP:
		h := make([]byte, 8, 8+len(s.Payload))
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		h = append(h, s.Payload...)
		binary.BigEndian.PutUint16(h[4:], uint16(len(h)))
		sum := checksum(pseudoHeaderSum(src, dst, policy.UDP, len(h)), h)
		if sum == 0 {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(h[6:], sum)
		return h
	case policy.SCTP:
		h := make([]byte, 12, 12+len(s.Payload))
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		binary.BigEndian.PutUint32(h[4:], 1)
		h = append(h, s.Payload...)
		binary.LittleEndian.PutUint32(h[8:], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
		return h
	case policy.ICMP, policy.ICMPv6:
		return icmp(s, src, dst)
	}
	return append([]byte(nil), s.Payload...)
}

func icmp(s Spec, src, dst netip.Addr) []byte {
	h := make([]byte, 8)
	h[0], h[1] = s.ICMP.Type, s.ICMP.Code
	body := s.Payload
	if inner := s.ICMP.Inner; inner != nil {
		body = IP(*inner)
		if n := s.ICMP.InnerBytes; n > 0 && n < len(body) {
			body = body[:n]
		}
		if s.Protocol == policy.ICMPv6 {
			binary.BigEndian.PutUint32(h[4:], s.ICMP.MTU)
		} else {
			binary.BigEndian.PutUint16(h[6:], uint16(s.ICMP.MTU))
		}
	} else {
		binary.BigEndian.PutUint16(h[4:], s.ICMP.ID)
		binary.BigEndian.PutUint16(h[6:], s.ICMP.Seq)
	}
	h = append(h, body...)
	var initial uint32
	if s.Protocol == policy.ICMPv6 {
		initial = pseudoHeaderSum(src, dst, policy.ICMPv6, len(h))
	}
	binary.BigEndian.PutUint16(h[2:], checksum(initial, h))
	return h
}

func pseudoHeaderSum(src, dst netip.Addr, proto policy.Protocol, length int) uint32 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		add(s[:])
		add(d[:])
	} else {
		s, d := src.As16(), dst.As16()
		add(s[:])
		add(d[:])
	}
	sum += uint32(proto) + uint32(length>>16) + uint32(length&0xffff)
	return sum
}

// checksum is the Internet checksum of b, starting from a partial sum.
func checksum(initial uint32, b []byte) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

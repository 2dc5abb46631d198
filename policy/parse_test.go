package policy_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

var (
	peer4  = netip.MustParseAddr("10.1.2.3")
	local4 = netip.MustParseAddr("10.9.9.9")
	peer6  = netip.MustParseAddr("fd00::1:2:3")
	local6 = netip.MustParseAddr("fd00::9")
)

func v4(proto policy.Protocol, dport uint16) packet.Spec {
	return packet.Spec{Src: peer4, Dst: local4, Protocol: proto, SrcPort: 40000, DstPort: dport, TCPFlags: packet.SYN}
}

func v6(proto policy.Protocol, dport uint16) packet.Spec {
	return packet.Spec{Src: peer6, Dst: local6, Protocol: proto, SrcPort: 40000, DstPort: dport, TCPFlags: packet.SYN}
}

// with returns a copy of s changed by f.
func with(s packet.Spec, f func(*packet.Spec)) packet.Spec {
	f(&s)
	return s
}

func ext(types ...policy.Protocol) []packet.ExtHeader {
	headers := make([]packet.ExtHeader, len(types))
	for i, t := range types {
		headers[i] = packet.ExtHeader{Type: t}
	}
	return headers
}

func laterFragment6(offset uint16) packet.ExtHeader {
	return packet.ExtHeader{Type: policy.Fragment, FragmentOffset: offset, ID: 7}
}

func TestParseFrame(t *testing.T) {
	type facts struct {
		proto   policy.Protocol
		hasPort bool
		port    uint16
		later   bool
		ext     int
	}
	cases := []struct {
		name    string
		frame   []byte
		want    facts
		wantErr error
		errText string
	}{
		{name: "IPv4 TCP", frame: packet.Build(v4(policy.TCP, 80)), want: facts{policy.TCP, true, 80, false, 0}},
		{name: "IPv4 UDP", frame: packet.Build(v4(policy.UDP, 53)), want: facts{policy.UDP, true, 53, false, 0}},
		{name: "IPv4 SCTP", frame: packet.Build(v4(policy.SCTP, 3868)), want: facts{policy.SCTP, true, 3868, false, 0}},
		{name: "IPv4 ICMP echo is port-less", frame: packet.Build(with(v4(policy.ICMP, 0), func(s *packet.Spec) {
			s.ICMP = packet.ICMP{Type: packet.ICMPv4EchoRequest, ID: 80, Seq: 80}
		})), want: facts{proto: policy.ICMP}},
		{name: "IPv4 protocol 0 is port-less", frame: packet.Build(v4(0, 80)), want: facts{proto: 0}},
		{name: "IPv4 unknown protocol 253", frame: packet.Build(with(v4(253, 0), func(s *packet.Spec) { s.Payload = []byte{0, 0, 0, 80} })), want: facts{proto: 253}},
		{name: "IPv4 options skipped", frame: packet.Build(with(v4(policy.TCP, 443), func(s *packet.Spec) {
			s.IPv4.Options = []byte{0x94, 0x04, 0, 0} // router alert
		})), want: facts{policy.TCP, true, 443, false, 0}},
		{name: "IPv4 40 bytes of options", frame: packet.Build(with(v4(policy.UDP, 123), func(s *packet.Spec) {
			s.IPv4.Options = make([]byte, 40)
		})), want: facts{policy.UDP, true, 123, false, 0}},
		{name: "IPv4 padding after total length", frame: packet.Build(with(v4(policy.UDP, 53), func(s *packet.Spec) {
			s.Malform.Trailer = []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
		})), want: facts{policy.UDP, true, 53, false, 0}},
		{name: "IPv4 first fragment with MF has a port", frame: packet.Build(with(v4(policy.TCP, 22), func(s *packet.Spec) {
			s.IPv4.MoreFragments = true
		})), want: facts{policy.TCP, true, 22, false, 0}},
		{name: "IPv4 later fragment is port-less", frame: packet.Build(with(v4(policy.TCP, 22), func(s *packet.Spec) {
			s.IPv4.FragmentOffset = 1
		})), want: facts{proto: policy.TCP, later: true}},
		{name: "IPv4 last fragment (no MF) max offset", frame: packet.Build(with(v4(policy.UDP, 22), func(s *packet.Spec) {
			s.IPv4.FragmentOffset = 0x1fff
		})), want: facts{proto: policy.UDP, later: true}},
		{name: "IPv4 later fragment needs no L4 bytes", frame: packet.Build(with(v4(policy.TCP, 22), func(s *packet.Spec) {
			s.IPv4.FragmentOffset = 100
			s.Malform.L4Bytes = packet.Int(0)
		})), want: facts{proto: policy.TCP, later: true}},
		{name: "IPv4 DF alone is not a fragment", frame: packet.Build(with(v4(policy.TCP, 22), func(s *packet.Spec) {
			s.IPv4.DontFragment = true
		})), want: facts{policy.TCP, true, 22, false, 0}},
		{name: "IPv4 TCP exactly 20 bytes", frame: packet.Build(with(v4(policy.TCP, 8080), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(20) })), want: facts{policy.TCP, true, 8080, false, 0}},
		{name: "IPv4 UDP exactly 8 bytes", frame: packet.Build(with(v4(policy.UDP, 9), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(8) })), want: facts{policy.UDP, true, 9, false, 0}},
		{name: "IPv4 SCTP exactly 12 bytes", frame: packet.Build(with(v4(policy.SCTP, 9), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(12) })), want: facts{policy.SCTP, true, 9, false, 0}},
		{name: "IPv4 dest port 0", frame: packet.Build(v4(policy.TCP, 0)), want: facts{policy.TCP, true, 0, false, 0}},

		{name: "IPv6 TCP", frame: packet.Build(v6(policy.TCP, 80)), want: facts{policy.TCP, true, 80, false, 0}},
		{name: "IPv6 UDP", frame: packet.Build(v6(policy.UDP, 53)), want: facts{policy.UDP, true, 53, false, 0}},
		{name: "IPv6 SCTP", frame: packet.Build(v6(policy.SCTP, 38412)), want: facts{policy.SCTP, true, 38412, false, 0}},
		{name: "IPv6 ICMPv6 echo is port-less", frame: packet.Build(with(v6(policy.ICMPv6, 0), func(s *packet.Spec) {
			s.ICMP = packet.ICMP{Type: packet.ICMPv6EchoRequest, ID: 80}
		})), want: facts{proto: policy.ICMPv6}},
		{name: "IPv6 Hop-by-Hop", frame: packet.Build(with(v6(policy.TCP, 81), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(policy.HopByHop) })), want: facts{policy.TCP, true, 81, false, 1}},
		{name: "IPv6 Routing", frame: packet.Build(with(v6(policy.TCP, 82), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(policy.Routing) })), want: facts{policy.TCP, true, 82, false, 1}},
		{name: "IPv6 Destination Options", frame: packet.Build(with(v6(policy.UDP, 83), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(policy.DestOptions) })), want: facts{policy.UDP, true, 83, false, 1}},
		{name: "IPv6 AH", frame: packet.Build(with(v6(policy.SCTP, 84), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(policy.AH) })), want: facts{policy.SCTP, true, 84, false, 1}},
		{name: "IPv6 AH length in 4-byte units", frame: packet.Build(with(v6(policy.TCP, 85), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.AH, Body: make([]byte, 18)}} // 20 bytes: len 3
		})), want: facts{policy.TCP, true, 85, false, 1}},
		{name: "IPv6 long Destination Options", frame: packet.Build(with(v6(policy.TCP, 86), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.DestOptions, Body: make([]byte, 2040)}} // len 255
		})), want: facts{policy.TCP, true, 86, false, 1}},
		{name: "IPv6 first fragment has a port", frame: packet.Build(with(v6(policy.TCP, 87), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.Fragment, MoreFragments: true}}
		})), want: facts{policy.TCP, true, 87, false, 1}},
		{name: "IPv6 every kind in order", frame: packet.Build(with(v6(policy.UDP, 88), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = ext(policy.HopByHop, policy.DestOptions, policy.Routing, policy.Fragment, policy.AH, policy.DestOptions)
		})), want: facts{policy.UDP, true, 88, false, 6}},
		{name: "IPv6 8 extension headers", frame: packet.Build(with(v6(policy.TCP, 89), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = ext(policy.HopByHop, 60, 43, 60, 43, 60, 51, 60)
		})), want: facts{policy.TCP, true, 89, false, 8}},
		{name: "IPv6 later fragment takes the fragment header's next header", frame: packet.Build(with(v6(policy.UDP, 53), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{laterFragment6(1)}
		})), want: facts{proto: policy.UDP, later: true, ext: 1}},
		{name: "IPv6 later fragment stops the walk", frame: packet.Build(with(v6(policy.TCP, 53), func(s *packet.Spec) {
			// The fragment header names Routing; what follows is fragment data,
			// here too short to be a Routing header.
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.HopByHop}, laterFragment6(5), {Type: policy.Routing, Len: packet.Int(200)}}
		})), want: facts{proto: policy.Routing, later: true, ext: 2}},
		{name: "IPv6 No Next Header", frame: packet.Build(v6(policy.NoNextHeader, 0)), want: facts{proto: policy.NoNextHeader}},
		{name: "IPv6 No Next Header after a header", frame: packet.Build(with(v6(policy.NoNextHeader, 0), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(policy.DestOptions) })), want: facts{proto: policy.NoNextHeader, ext: 1}},
		{name: "IPv6 ESP is a protocol", frame: packet.Build(with(v6(50, 0), func(s *packet.Spec) { s.Payload = make([]byte, 16) })), want: facts{proto: 50}},
		{name: "IPv6 Mobility header is a protocol", frame: packet.Build(with(v6(135, 0), func(s *packet.Spec) { s.Payload = make([]byte, 8) })), want: facts{proto: 135}},
		{name: "IPv6 padding after payload length", frame: packet.Build(with(v6(policy.TCP, 90), func(s *packet.Spec) { s.Malform.Trailer = make([]byte, 30) })), want: facts{policy.TCP, true, 90, false, 0}},
		{name: "IPv6 UDP exactly 8 bytes after headers", frame: packet.Build(with(v6(policy.UDP, 91), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = ext(policy.HopByHop)
			s.Malform.L4Bytes = packet.Int(8)
		})), want: facts{policy.UDP, true, 91, false, 1}},
		{name: "ARP", frame: packet.ARP(peer4, local4), want: facts{}},

		{name: "empty frame", frame: nil, wantErr: policy.ErrMalformed},
		{name: "13 bytes", frame: make([]byte, 13), wantErr: policy.ErrMalformed},
		{name: "IPv4 EtherType, no IP header", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.FrameBytes = packet.Int(14) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 header 19 bytes", frame: packet.Build(with(v4(0, 0), func(s *packet.Spec) { s.Malform.FrameBytes = packet.Int(33) })), wantErr: policy.ErrMalformed},
		{name: "VLAN tag", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.VLANs = []uint16{100} })), wantErr: policy.ErrNotIP, errText: "VLAN"},
		{name: "QinQ tag", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.EtherType = 0x88A8 })), wantErr: policy.ErrNotIP},
		{name: "LLDP", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.EtherType = 0x88CC })), wantErr: policy.ErrNotIP},
		{name: "IPv4 version 6 in IPv4 EtherType", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.Version = packet.Int(6) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 packet in IPv4 EtherType", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) { s.EtherType = policy.EtherTypeIPv4 })), wantErr: policy.ErrMalformed},
		{name: "IPv4 packet in IPv6 EtherType", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.EtherType = policy.EtherTypeIPv6 })), wantErr: policy.ErrMalformed},
		{name: "IPv4 IHL 4", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.IHL = packet.Int(4) })), wantErr: policy.ErrMalformed, errText: "IHL 4"},
		{name: "IPv4 IHL 0", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.IHL = packet.Int(0) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 IHL*4 > total length", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.IHL = packet.Int(15) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 total length 0", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.TotalLength = packet.Int(0) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 total length > bytes present", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.TotalLength = packet.Int(41) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 frame cut one byte short", frame: packet.Build(with(v4(policy.UDP, 80), func(s *packet.Spec) { s.Malform.FrameBytes = packet.Int(14 + 27) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 total length cuts TCP header", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) {
			s.Malform.TotalLength = packet.Int(39)
			s.Payload = make([]byte, 100)
		})), wantErr: policy.ErrMalformed},
		{name: "IPv4 IHL beyond real header leaves TCP short", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.IHL = packet.Int(6) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 TCP 19 bytes", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(19) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 UDP 7 bytes", frame: packet.Build(with(v4(policy.UDP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(7) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 SCTP 11 bytes", frame: packet.Build(with(v4(policy.SCTP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(11) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 TCP 0 bytes", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(0) })), wantErr: policy.ErrMalformed},
		{name: "IPv4 first fragment with short TCP", frame: packet.Build(with(v4(policy.TCP, 80), func(s *packet.Spec) {
			s.IPv4.MoreFragments = true
			s.Malform.L4Bytes = packet.Int(8)
		})), wantErr: policy.ErrMalformed},
		{name: "IPv6 header 39 bytes", frame: packet.Build(with(v6(policy.NoNextHeader, 0), func(s *packet.Spec) { s.Malform.FrameBytes = packet.Int(14 + 39) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 version 4 in IPv6 EtherType", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) { s.Malform.Version = packet.Int(4) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 payload length > bytes present", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) { s.Malform.PayloadLength = packet.Int(21) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 TCP 19 bytes", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(19) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 UDP 7 bytes", frame: packet.Build(with(v6(policy.UDP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(7) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 SCTP 11 bytes", frame: packet.Build(with(v6(policy.SCTP, 80), func(s *packet.Spec) { s.Malform.L4Bytes = packet.Int(11) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 payload length cuts UDP behind a header", frame: packet.Build(with(v6(policy.UDP, 80), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = ext(policy.DestOptions)
			s.Malform.PayloadLength = packet.Int(15)
		})), wantErr: policy.ErrMalformed},
		{name: "IPv6 Hop-by-Hop not first", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(policy.DestOptions, policy.HopByHop) })), wantErr: policy.ErrMalformed, errText: "Hop-by-Hop"},
		{name: "IPv6 Hop-by-Hop twice", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) { s.IPv6.ExtHeaders = ext(policy.HopByHop, policy.HopByHop) })), wantErr: policy.ErrMalformed},
		{name: "IPv6 9 extension headers", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = ext(0, 60, 43, 60, 43, 60, 51, 60, 43)
		})), wantErr: policy.ErrMalformed, errText: "more than 8"},
		{name: "IPv6 9th header a later fragment", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = append(ext(0, 60, 43, 60, 43, 60, 51, 60), laterFragment6(3))
		})), wantErr: policy.ErrMalformed},
		{name: "IPv6 9 headers before No Next Header", frame: packet.Build(with(v6(policy.NoNextHeader, 0), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = ext(60, 60, 60, 60, 60, 60, 60, 60, 60)
		})), wantErr: policy.ErrMalformed},
		{name: "IPv6 extension header length past payload", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.DestOptions, Len: packet.Int(3)}} // 32 bytes, 8+20 present
		})), wantErr: policy.ErrMalformed, errText: "exceeds"},
		{name: "IPv6 AH length past payload", frame: packet.Build(with(v6(policy.NoNextHeader, 0), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.AH, Len: packet.Int(3)}} // 20 bytes, 16 present
		})), wantErr: policy.ErrMalformed},
		{name: "IPv6 extension header of 1 byte", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = ext(policy.Routing)
			s.Malform.PayloadLength = packet.Int(1)
		})), wantErr: policy.ErrMalformed},
		{name: "IPv6 Hop-by-Hop named, no bytes", frame: packet.Build(with(v6(policy.HopByHop, 0), func(s *packet.Spec) {})), wantErr: policy.ErrMalformed},
		{name: "IPv6 fragment header of 7 bytes", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{laterFragment6(1)}
			s.Malform.PayloadLength = packet.Int(7)
		})), wantErr: policy.ErrMalformed},
		{name: "IPv6 first fragment with short TCP", frame: packet.Build(with(v6(policy.TCP, 80), func(s *packet.Spec) {
			s.IPv6.ExtHeaders = []packet.ExtHeader{{Type: policy.Fragment, MoreFragments: true}}
			s.Malform.L4Bytes = packet.Int(12)
		})), wantErr: policy.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, dir := range []policy.Dir{policy.Ingress, policy.Egress} {
				p, err := policy.ParseFrame(tc.frame, dir)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("%v: err = %v, want %v", dir, err, tc.wantErr)
					}
					if msg := err.Error(); strings.Contains(msg, "%!") || !strings.HasPrefix(msg, tc.wantErr.Error()+": ") {
						t.Fatalf("%v: badly formatted error %q", dir, msg)
					}
					if !strings.Contains(err.Error(), tc.errText) {
						t.Fatalf("%v: err = %q, want it to mention %q", dir, err, tc.errText)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%v: unexpected error %v", dir, err)
				}
				got := facts{p.Protocol, p.HasPort, p.Port, p.LaterFragment, p.ExtensionHeaders}
				if got != tc.want {
					t.Fatalf("%v: facts = %+v, want %+v (%v)", dir, got, tc.want, p)
				}
				if p.EtherType == policy.EtherTypeARP {
					continue
				}
				wantPeer := p.Src
				if dir == policy.Egress {
					wantPeer = p.Dst
				}
				if p.Peer != wantPeer || !p.Peer.IsValid() {
					t.Fatalf("%v: peer %v, src %v, dst %v", dir, p.Peer, p.Src, p.Dst)
				}
			}
		})
	}
}

func TestParseFrameAddresses(t *testing.T) {
	mapped := netip.MustParseAddr("::ffff:10.1.2.3")
	cases := []struct {
		spec     packet.Spec
		src, dst netip.Addr
	}{
		{v4(policy.TCP, 1), peer4, local4},
		{v6(policy.TCP, 1), peer6, local6},
		{packet.Spec{Src: mapped, Dst: local6, Protocol: policy.UDP}, mapped, local6},
	}
	for _, tc := range cases {
		p, err := policy.ParseFrame(packet.Build(tc.spec), policy.Ingress)
		if err != nil {
			t.Fatal(err)
		}
		if p.Src != tc.src || p.Dst != tc.dst || p.Peer != tc.src {
			t.Errorf("src %v dst %v peer %v, want %v %v", p.Src, p.Dst, p.Peer, tc.src, tc.dst)
		}
		if tc.src.Is4In6() && (!p.IsIPv6() || p.Src.Is4()) {
			t.Errorf("a v4-mapped source must stay an IPv6 address, got %v", p.Src)
		}
	}
}

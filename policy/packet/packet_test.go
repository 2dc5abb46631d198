package packet_test

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

var (
	src4 = netip.MustParseAddr("192.0.2.1")
	dst4 = netip.MustParseAddr("198.51.100.2")
	src6 = netip.MustParseAddr("2001:db8::1")
	dst6 = netip.MustParseAddr("2001:db8::2")
)

// sums16 is the one's-complement sum of b (and of the words in extra).
func sums16(b []byte, extra ...uint32) uint16 {
	var sum uint32
	for _, e := range extra {
		sum += e
	}
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		sum += w
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func pseudo(src, dst netip.Addr, proto policy.Protocol, length int) []uint32 {
	words := []uint32{uint32(proto), uint32(length)}
	for _, b := range [][]byte{src.AsSlice(), dst.AsSlice()} {
		for i := 0; i < len(b); i += 2 {
			words = append(words, uint32(binary.BigEndian.Uint16(b[i:])))
		}
	}
	return words
}

func TestIPv4TCP(t *testing.T) {
	frame := packet.Build(packet.Spec{Src: src4, Dst: dst4, Protocol: policy.TCP, SrcPort: 1234, DstPort: 80, TCPFlags: packet.SYN | packet.ACK, Payload: []byte("hello")})
	if len(frame) != 14+20+20+5 {
		t.Fatalf("frame of %d bytes", len(frame))
	}
	if got := binary.BigEndian.Uint16(frame[12:]); got != policy.EtherTypeIPv4 {
		t.Fatalf("EtherType 0x%04x", got)
	}
	ip := frame[14:]
	if ip[0] != 0x45 || binary.BigEndian.Uint16(ip[2:]) != 45 || ip[8] != 64 || ip[9] != 6 {
		t.Fatalf("IPv4 header % x", ip[:20])
	}
	if netip.AddrFrom4([4]byte(ip[12:16])) != src4 || netip.AddrFrom4([4]byte(ip[16:20])) != dst4 {
		t.Fatal("addresses")
	}
	if sums16(ip[:20]) != 0xffff {
		t.Fatal("bad IPv4 header checksum")
	}
	tcp := ip[20:]
	if binary.BigEndian.Uint16(tcp[0:]) != 1234 || binary.BigEndian.Uint16(tcp[2:]) != 80 || tcp[12] != 0x50 || tcp[13] != packet.SYN|packet.ACK {
		t.Fatalf("TCP header % x", tcp[:20])
	}
	if sums16(tcp, pseudo(src4, dst4, policy.TCP, len(tcp))...) != 0xffff {
		t.Fatal("bad TCP checksum")
	}
	if string(tcp[20:]) != "hello" {
		t.Fatal("payload")
	}
}

func TestIPv6UDPAndSCTP(t *testing.T) {
	frame := packet.Build(packet.Spec{Src: src6, Dst: dst6, Protocol: policy.UDP, SrcPort: 5353, DstPort: 53, Payload: []byte{1, 2, 3}})
	ip := frame[14:]
	if binary.BigEndian.Uint16(frame[12:]) != policy.EtherTypeIPv6 || ip[0]>>4 != 6 || binary.BigEndian.Uint16(ip[4:]) != 11 || ip[6] != 17 || ip[7] != 64 {
		t.Fatalf("IPv6 header % x", ip[:40])
	}
	udp := ip[40:]
	if binary.BigEndian.Uint16(udp[2:]) != 53 || binary.BigEndian.Uint16(udp[4:]) != 11 {
		t.Fatalf("UDP header % x", udp[:8])
	}
	if sums16(udp, pseudo(src6, dst6, policy.UDP, len(udp))...) != 0xffff {
		t.Fatal("bad UDP checksum")
	}

	frame = packet.Build(packet.Spec{Src: src6, Dst: dst6, Protocol: policy.SCTP, SrcPort: 1, DstPort: 38412, Payload: make([]byte, 16)})
	sctp := append([]byte(nil), frame[14+40:]...)
	want := binary.LittleEndian.Uint32(sctp[8:])
	clear(sctp[8:12])
	if crc32.Checksum(sctp, crc32.MakeTable(crc32.Castagnoli)) != want || binary.BigEndian.Uint16(sctp[2:]) != 38412 {
		t.Fatal("bad SCTP header or CRC32c")
	}
}

func TestIPv4OptionsAndFragments(t *testing.T) {
	frame := packet.Build(packet.Spec{Src: src4, Dst: dst4, Protocol: policy.UDP, DstPort: 9,
		IPv4: packet.IPv4{ID: 0xbeef, MoreFragments: true, FragmentOffset: 0x1234, Options: []byte{0x94, 4, 0}}})
	ip := frame[14:]
	if ip[0] != 0x46 || binary.BigEndian.Uint16(ip[2:]) != 24+8 || binary.BigEndian.Uint16(ip[4:]) != 0xbeef {
		t.Fatalf("IPv4 header % x", ip[:24])
	}
	if flags := binary.BigEndian.Uint16(ip[6:]); flags != 0x2000|0x1234 {
		t.Fatalf("flags/offset 0x%04x", flags)
	}
	if string(ip[20:24]) != "\x94\x04\x00\x00" || sums16(ip[:24]) != 0xffff {
		t.Fatalf("options % x or checksum", ip[20:24])
	}
	df := packet.Build(packet.Spec{Src: src4, Dst: dst4, IPv4: packet.IPv4{DontFragment: true}})
	if binary.BigEndian.Uint16(df[14+6:]) != 0x4000 {
		t.Fatal("DF flag")
	}
}

func TestIPv6ExtensionHeaders(t *testing.T) {
	length := 3
	frame := packet.Build(packet.Spec{Src: src6, Dst: dst6, Protocol: policy.TCP, DstPort: 443, IPv6: packet.IPv6{ExtHeaders: []packet.ExtHeader{
		{Type: policy.HopByHop},
		{Type: policy.DestOptions, Body: make([]byte, 10)},
		{Type: policy.AH},
		{Type: policy.Routing, Len: &length},
		{Type: policy.Fragment, FragmentOffset: 5, MoreFragments: true, ID: 42},
	}}})
	ip := frame[14:]
	if ip[6] != 0 {
		t.Fatalf("first next header %d", ip[6])
	}
	type hdr struct{ next, length, size int }
	want := []hdr{{60, 0, 8}, {51, 1, 16}, {43, 2, 16}, {44, 3, 8}, {6, 0, 8}}
	offset := 40
	for i, w := range want {
		got := hdr{int(ip[offset]), int(ip[offset+1]), w.size}
		if got != w {
			t.Fatalf("header %d: %+v, want %+v", i, got, w)
		}
		offset += w.size
	}
	fragment := ip[offset-8:]
	if binary.BigEndian.Uint16(fragment[2:]) != 5<<3|1 || binary.BigEndian.Uint32(fragment[4:]) != 42 {
		t.Fatalf("fragment header % x", fragment[:8])
	}
	if binary.BigEndian.Uint16(ip[4:]) != uint16(offset-40+20) || binary.BigEndian.Uint16(ip[offset+2:]) != 443 {
		t.Fatal("payload length or TCP after the chain")
	}
}

func TestICMP(t *testing.T) {
	echo := packet.Build(packet.Spec{Src: src4, Dst: dst4, Protocol: policy.ICMP, ICMP: packet.ICMP{Type: packet.ICMPv4EchoRequest, ID: 7, Seq: 9}, Payload: []byte("ping")})
	icmp := echo[14+20:]
	if icmp[0] != 8 || binary.BigEndian.Uint16(icmp[4:]) != 7 || binary.BigEndian.Uint16(icmp[6:]) != 9 || sums16(icmp) != 0xffff {
		t.Fatalf("ICMP echo % x", icmp)
	}

	inner := packet.Spec{Src: dst4, Dst: src4, Protocol: policy.TCP, SrcPort: 80, DstPort: 40000, Payload: make([]byte, 100)}
	fragNeeded := packet.Build(packet.Spec{Src: src4, Dst: dst4, Protocol: policy.ICMP,
		ICMP: packet.ICMP{Type: packet.ICMPv4DestUnreachable, Code: packet.ICMPv4CodeFragNeeded, MTU: 1400, Inner: &inner, InnerBytes: 28}})
	icmp = fragNeeded[14+20:]
	if len(icmp) != 8+28 || icmp[0] != 3 || icmp[1] != 4 || binary.BigEndian.Uint16(icmp[6:]) != 1400 || sums16(icmp) != 0xffff {
		t.Fatalf("frag needed % x", icmp)
	}
	quoted := icmp[8:]
	if string(quoted[:20]) != string(packet.IP(inner)[:20]) || binary.BigEndian.Uint16(quoted[20:]) != 80 {
		t.Fatal("quoted packet")
	}

	inner6 := packet.Spec{Src: dst6, Dst: src6, Protocol: policy.UDP, SrcPort: 53, DstPort: 5353}
	tooBig := packet.Build(packet.Spec{Src: src6, Dst: dst6, Protocol: policy.ICMPv6, ICMP: packet.ICMP{Type: packet.ICMPv6PacketTooBig, MTU: 1280, Inner: &inner6}})
	icmp = tooBig[14+40:]
	if icmp[0] != 2 || binary.BigEndian.Uint32(icmp[4:]) != 1280 || len(icmp) != 8+48 {
		t.Fatalf("packet too big % x", icmp)
	}
	if sums16(icmp, pseudo(src6, dst6, policy.ICMPv6, len(icmp))...) != 0xffff {
		t.Fatal("bad ICMPv6 checksum")
	}
}

func TestMalform(t *testing.T) {
	base := packet.Spec{Src: src4, Dst: dst4, Protocol: policy.TCP, DstPort: 80}
	cases := []struct {
		name  string
		m     packet.Malform
		check func(frame []byte) bool
	}{
		{"version", packet.Malform{Version: packet.Int(7)}, func(f []byte) bool { return f[14]>>4 == 7 }},
		{"IHL", packet.Malform{IHL: packet.Int(3)}, func(f []byte) bool { return f[14]&0xf == 3 && len(f) == 54 }},
		{"total length", packet.Malform{TotalLength: packet.Int(1000)}, func(f []byte) bool { return binary.BigEndian.Uint16(f[16:]) == 1000 && len(f) == 54 }},
		{"L4 bytes", packet.Malform{L4Bytes: packet.Int(10)}, func(f []byte) bool { return len(f) == 44 && binary.BigEndian.Uint16(f[16:]) == 30 }},
		{"trailer", packet.Malform{Trailer: []byte{9, 9}}, func(f []byte) bool { return len(f) == 56 && f[55] == 9 && binary.BigEndian.Uint16(f[16:]) == 40 }},
		{"frame bytes", packet.Malform{FrameBytes: packet.Int(20)}, func(f []byte) bool { return len(f) == 20 }},
		{"frame bytes 0", packet.Malform{FrameBytes: packet.Int(0)}, func(f []byte) bool { return len(f) == 0 }},
	}
	for _, tc := range cases {
		s := base
		s.Malform = tc.m
		if frame := packet.Build(s); !tc.check(frame) {
			t.Errorf("%s: % x", tc.name, frame)
		}
	}
	v6 := packet.Build(packet.Spec{Src: src6, Dst: dst6, Protocol: policy.UDP, Malform: packet.Malform{PayloadLength: packet.Int(3)}})
	if binary.BigEndian.Uint16(v6[18:]) != 3 || len(v6) != 14+40+8 {
		t.Errorf("IPv6 payload length override % x", v6)
	}
}

func TestEthernet(t *testing.T) {
	frame := packet.Build(packet.Spec{Src: src4, Dst: dst4, VLANs: []uint16{100, 200}, SrcMAC: [6]byte{1, 2, 3, 4, 5, 6}})
	if string(frame[6:12]) != "\x01\x02\x03\x04\x05\x06" || string(frame[0:6]) != string(packet.DefaultDstMAC[:]) {
		t.Fatal("MACs")
	}
	if binary.BigEndian.Uint16(frame[12:]) != 0x8100 || binary.BigEndian.Uint16(frame[14:]) != 100 ||
		binary.BigEndian.Uint16(frame[16:]) != 0x8100 || binary.BigEndian.Uint16(frame[18:]) != 200 ||
		binary.BigEndian.Uint16(frame[20:]) != policy.EtherTypeIPv4 || frame[22] != 0x45 {
		t.Fatalf("VLAN tags % x", frame[:23])
	}
	arp := packet.ARP(src4, dst4)
	if len(arp) != 42 || binary.BigEndian.Uint16(arp[12:]) != policy.EtherTypeARP || netip.AddrFrom4([4]byte(arp[38:42])) != dst4 || netip.AddrFrom4([4]byte(arp[28:32])) != src4 {
		t.Fatalf("ARP % x", arp)
	}
}

func TestMixedFamiliesPanic(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for an IPv4 source and an IPv6 destination")
		}
	}()
	packet.Build(packet.Spec{Src: src4, Dst: dst6})
}

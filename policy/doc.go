// Verdict rules
//
// These rules decide one packet, given as an Ethernet frame, in one
// direction of one endpoint, with no connection state. Evaluate implements
// them; the eBPF programs implement them too and are tested against
// Evaluate. Connection tracking (replies, related ICMP errors, tracked
// fragments) only ever adds "allow" on top of them, for packets of flows
// these rules allowed; a TCP SYN without ACK, FIN or RST always opens a
// new connection and gets nothing from an older flow of the same
// addresses and ports.
//
//  1. A direction that is not Isolated allows every packet.
//  2. Ethernet: fewer than 14 bytes: drop. EtherType ARP (0x0806): allow.
//     IPv4 (0x0800) and IPv6 (0x86DD) are parsed; every other EtherType,
//     VLAN tags included: drop.
//  3. IPv4: drop unless at least 20 bytes, version 4, IHL >= 5, IHL*4 <=
//     total length <= bytes present (bytes past total length are padding).
//     A fragment with offset > 0 is a "later fragment". The peer is the
//     source address for Ingress, the destination for Egress.
//  4. IPv6: drop unless at least 40 bytes, version 6, 40 + payload length <=
//     bytes present. Extension headers are walked: Hop-by-Hop (0, only as
//     the first), Routing (43), Destination Options (60): (len+1)*8 bytes;
//     AH (51): (len+2)*4 bytes; Fragment (44): 8 bytes, and an offset > 0
//     makes a later fragment whose protocol is the fragment header's next
//     header. Drop on a header that runs past 40 + payload length, on
//     Hop-by-Hop not first, or on more than 8 extension headers (a Fragment
//     header counts). The first other next header is the
//     protocol (59, No Next Header, included).
//  5. TCP (6), UDP (17) and SCTP (132) packets that are not later fragments
//     need 20, 8 and 12 bytes of L4 header inside the IP payload, else drop;
//     their port is the destination port (bytes 2-3). Every other packet,
//     later fragments and any other protocol (ICMP, ICMPv6, 0, ...), is
//     "port-less".
//  6. IPv6 neighbour discovery, like ARP, is allowed: an ICMPv6 packet
//     (not a later fragment) with hop limit 255, at least 4 bytes of ICMPv6
//     header, and type 133 to 136 (router solicitation and advertisement,
//     neighbour solicitation and advertisement). Without it an isolated
//     IPv6 pod could not resolve its gateway.
//  7. CIDRs and excepts are taken as their masked network (10.1.2.3/8 is
//     10.0.0.0/8). Allow iff some Rule has the peer inside CIDR (same address family;
//     an IPv4 CIDR never matches an IPv6 address, mapped ones included),
//     outside all of its own Excepts, and either no Ports, or a PortRange of
//     the packet's protocol that is all-ports (Port 0) or, for a packet with
//     a port, contains the port. A port-less packet matches only rules with
//     no Ports or with an all-ports entry of its protocol.
package policy

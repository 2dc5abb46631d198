/* Ethernet/IP/L4 parsing by the verdict rules of policy/doc.go. */
#pragma once

#include "common.h"

enum parse_result {
	PARSE_IP = 0,
	PARSE_ARP,
	PARSE_NOT_IP,
	PARSE_MALFORMED,
};

#define IPV6_MAX_EXT_HEADERS 8

struct packet {
	__u8 src[16];
	__u8 dst[16];
	__u32 frag_id;
	__u32 l4_off;		/* offset of the L4 header in the frame */
	__u32 l4_len;		/* bytes of IP payload from l4_off */
	__u16 sport;		/* host order, valid with has_port */
	__u16 dport;
	__u8 family;		/* 4 or 6 */
	__u8 proto;
	__u8 has_port;
	__u8 later_fragment;
	__u8 first_fragment;	/* offset 0 with more fragments */
	__u8 tcp_flags;
	__u8 icmp_type;		/* valid with has_icmp */
	__u8 has_icmp;
	__u16 icmp_id;		/* echo identifier, host order */
	__u8 frag_proto;	/* protocol field of the IPv4 or IPv6 fragment header */
	__u8 hop_limit;		/* IPv6 */
	__u8 neighbor_discovery;	/* rule 6 of policy/doc.go allows it */
};

#define NDP_HOP_LIMIT 255
#define ICMPV6_ROUTER_SOLICITATION 133
#define ICMPV6_NEIGHBOR_ADVERTISEMENT 136

/* Header buffers on the stack: 8-byte aligned so that load() fills them
 * with whole-word copies. */
#define HEADER_BUF __attribute__((aligned(8)))

/* Copies len bytes (a constant) from the linear packet data in words: the
 * packet may be unaligned (x86 loads it as fast), the stack buffer is not. */
static __always_inline void copy_words(void *to, const void *from, const __u32 len)
{
	__u32 i = 0;
#pragma unroll
	for (; i + 8 <= len; i += 8)
		*(__u64 *)(to + i) = *(const __u64 *)(from + i);
	if (i + 4 <= len) {
		*(__u32 *)(to + i) = *(const __u32 *)(from + i);
		i += 4;
	}
	if (i + 2 <= len) {
		*(__u16 *)(to + i) = *(const __u16 *)(from + i);
		i += 2;
	}
	if (i < len)
		*(__u8 *)(to + i) = *(const __u8 *)(from + i);
}

/* Copies len bytes at offset off of the frame into the HEADER_BUF to:
 * straight from the linear data when it holds them, else through the
 * helper (paged skbs). Returns non-zero when the frame is shorter. */
static __always_inline int load(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (off <= 0x3fff) {
		__u8 *from = data + off;
		if ((void *)(from + len) <= data_end) {
			copy_words(to, from, len);
			return 0;
		}
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

static __always_inline int l4_header_need(__u8 proto)
{
	switch (proto) {
	case PROTO_TCP:
		return 20;
	case PROTO_UDP:
		return 8;
	case PROTO_SCTP:
		return 12;
	}
	return 0;
}

/* Reads ports, TCP flags and the ICMP type once the IP layer is known. */
static __always_inline int parse_l4(struct __sk_buff *skb, struct packet *p)
{
	if (p->later_fragment)
		return PARSE_IP;
	int need = l4_header_need(p->proto);
	if (need) {
		__u8 hdr[14] HEADER_BUF;
		if (p->l4_len < (__u32)need)
			return PARSE_MALFORMED;
		if (p->proto == PROTO_TCP) {
			if (load(skb, p->l4_off, hdr, 14))
				return PARSE_MALFORMED;
		} else if (load(skb, p->l4_off, hdr, 4)) {
			return PARSE_MALFORMED;
		}
		p->sport = ((__u16)hdr[0] << 8) | hdr[1];
		p->dport = ((__u16)hdr[2] << 8) | hdr[3];
		p->has_port = 1;
		if (p->proto == PROTO_TCP)
			p->tcp_flags = hdr[13];
		return PARSE_IP;
	}
	if ((p->proto == PROTO_ICMP && p->family == 4) || (p->proto == PROTO_ICMPV6 && p->family == 6)) {
		__u8 hdr[8] HEADER_BUF = {};
		if (p->l4_len >= 8) {
			if (load(skb, p->l4_off, hdr, 8))
				return PARSE_IP;
			p->has_icmp = 1;
			p->icmp_type = hdr[0];
			p->icmp_id = ((__u16)hdr[4] << 8) | hdr[5];
		} else if (p->l4_len < 4 || load(skb, p->l4_off, hdr, 4)) {
			return PARSE_IP;
		}
		p->neighbor_discovery = p->family == 6 && p->hop_limit == NDP_HOP_LIMIT &&
					hdr[0] >= ICMPV6_ROUTER_SOLICITATION && hdr[0] <= ICMPV6_NEIGHBOR_ADVERTISEMENT;
	}
	return PARSE_IP;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct packet *p)
{
	__u8 h[20] HEADER_BUF;
	if (load(skb, ETH_HLEN, h, 20))
		return PARSE_MALFORMED;
	if ((h[0] >> 4) != 4)
		return PARSE_MALFORMED;
	__u32 hlen = (h[0] & 0x0f) * 4;
	if (hlen < 20)
		return PARSE_MALFORMED;
	__u32 total = ((__u32)h[2] << 8) | h[3];
	if (hlen > total || total > skb->len - ETH_HLEN)
		return PARSE_MALFORMED;
	__builtin_memcpy(p->src, &h[12], 4);
	__builtin_memcpy(p->dst, &h[16], 4);
	p->family = 4;
	p->proto = h[9];
	__u16 frag = ((__u16)h[6] << 8) | h[7];
	p->later_fragment = (frag & 0x1fff) != 0;
	p->first_fragment = !p->later_fragment && (frag & 0x2000);
	p->frag_id = ((__u32)h[4] << 8) | h[5];
	p->frag_proto = h[9];
	p->l4_off = ETH_HLEN + hlen;
	p->l4_len = total - hlen;
	return parse_l4(skb, p);
}

static __always_inline int ipv6_is_extension(__u8 next)
{
	return next == 0 || next == 43 || next == 44 || next == 51 || next == 60;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct packet *p)
{
	__u8 h[40] HEADER_BUF;
	if (load(skb, ETH_HLEN, h, 40))
		return PARSE_MALFORMED;
	if ((h[0] >> 4) != 6)
		return PARSE_MALFORMED;
	__u32 end = 40 + (((__u32)h[4] << 8) | h[5]);
	if (end > skb->len - ETH_HLEN)
		return PARSE_MALFORMED;
	__builtin_memcpy(p->src, &h[8], 16);
	__builtin_memcpy(p->dst, &h[24], 16);
	p->family = 6;
	p->hop_limit = h[7];
	__u8 next = h[6];
	__u32 off = 40;
	int i;
	for (i = 0; i <= IPV6_MAX_EXT_HEADERS; i++) {
		if (!ipv6_is_extension(next))
			break;
		if (next == 0 && i > 0)
			return PARSE_MALFORMED;
		if (i == IPV6_MAX_EXT_HEADERS)
			return PARSE_MALFORMED;
		__u8 ext[8] HEADER_BUF;
		__u32 size = 8;
		if (next != 44) {
			if (off + 2 > end)
				return PARSE_MALFORMED;
			if (load(skb, ETH_HLEN + off, ext, 2))
				return PARSE_MALFORMED;
			size = next == 51 ? ((__u32)ext[1] + 2) * 4 : ((__u32)ext[1] + 1) * 8;
		}
		if (off + size > end)
			return PARSE_MALFORMED;
		if (next == 44) {
			if (load(skb, ETH_HLEN + off, ext, 8))
				return PARSE_MALFORMED;
			__u16 frag = ((__u16)ext[2] << 8) | ext[3];
			p->frag_id = ((__u32)ext[4] << 24) | ((__u32)ext[5] << 16) | ((__u32)ext[6] << 8) | ext[7];
			p->frag_proto = ext[0];
			if (frag >> 3) {
				p->later_fragment = 1;
				p->proto = ext[0];
				p->l4_off = ETH_HLEN + off + size;
				p->l4_len = end - off - size;
				return PARSE_IP;
			}
			p->first_fragment = frag & 1;
		}
		next = ext[0];
		off += size;
	}
	p->proto = next;
	p->l4_off = ETH_HLEN + off;
	p->l4_len = end - off;
	return parse_l4(skb, p);
}

/* Fills p from the frame; PARSE_IP only for a packet the rules may judge. */
static __always_inline int parse_frame(struct __sk_buff *skb, struct packet *p)
{
	__u8 eth[2] HEADER_BUF;
	if (load(skb, 12, eth, 2))
		return PARSE_MALFORMED;
	__u16 type = ((__u16)eth[0] << 8) | eth[1];
	switch (type) {
	case ETH_P_ARP:
		return PARSE_ARP;
	case ETH_P_IP:
		return parse_ipv4(skb, p);
	case ETH_P_IPV6:
		return parse_ipv6(skb, p);
	}
	return PARSE_NOT_IP;
}

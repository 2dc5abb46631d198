/* Connection tracking keyed by endpoint, seen from the pod: both directions
 * of a flow share one entry. */
#pragma once

#include "common.h"
#include "parse.h"

enum ct_state {
	CT_TCP_SYN = 1,
	CT_TCP_ESTABLISHED,
	CT_TCP_CLOSING,		/* FIN seen */
	CT_TCP_RESET,
	CT_UDP,
	CT_OTHER,		/* ICMP echo and other protocols */
	CT_STATES,
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Timestamps are bpf_jiffies64(), the cheapest clock. Idle timeouts per
 * state and of fragments, in jiffies; set from Go, which knows HZ. */
volatile const __u64 ct_timeout_jiffies[8] = {
	[CT_TCP_SYN] = 60 * 250,
	[CT_TCP_ESTABLISHED] = 6 * 3600 * 250,
	[CT_TCP_CLOSING] = 120 * 250,
	[CT_TCP_RESET] = 10 * 250,
	[CT_UDP] = 120 * 250,
	[CT_OTHER] = 30 * 250,
};
volatile const __u64 fragment_timeout_jiffies = 30 * 250;

struct ct_key {
	__u32 endpoint;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u8 pod[16];
	__u8 peer[16];
	__u16 pod_port;		/* host order */
	__u16 peer_port;
};

struct ct_entry {
	__u64 last_seen;	/* jiffies */
	__u32 revision;
	__u32 rule;
	__u8 state;
	__u8 origin;		/* direction of the first packet */
	__u8 pad[6];
};

/* The IPv4 key of a flow: shorter keys hash and compare faster. */
struct ct_key4 {
	__u32 endpoint_proto;	/* endpoint << 8 | proto */
	__u8 pod[4];
	__u8 peer[4];
	__u16 pod_port;
	__u16 peer_port;
};

/* IPv4 flows; sizes are replaced from Go. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key4);
	__type(value, struct ct_entry);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack4 SEC(".maps");

/* IPv6 flows. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack6 SEC(".maps");

static __always_inline void ct_key4_of(struct ct_key4 *k4, const struct ct_key *k)
{
	k4->endpoint_proto = k->endpoint << 8 | k->proto;
	__builtin_memcpy(k4->pod, k->pod, 4);
	__builtin_memcpy(k4->peer, k->peer, 4);
	k4->pod_port = k->pod_port;
	k4->peer_port = k->peer_port;
}

static __always_inline struct ct_entry *ct_find(const struct ct_key *k)
{
	if (k->family == 4) {
		struct ct_key4 k4;
		ct_key4_of(&k4, k);
		struct ct_entry *e = bpf_map_lookup_elem(&conntrack4, &k4);
		/* Keeps clang from merging the two lookups into one call with
		 * either map: the verifier inlines only calls of one map. */
		asm volatile("" : "+r"(e));
		return e;
	}
	return bpf_map_lookup_elem(&conntrack6, k);
}

static __always_inline long ct_insert(const struct ct_key *k, const struct ct_entry *e)
{
	if (k->family == 4) {
		struct ct_key4 k4;
		ct_key4_of(&k4, k);
		return bpf_map_update_elem(&conntrack4, &k4, e, BPF_ANY);
	}
	return bpf_map_update_elem(&conntrack6, k, e, BPF_ANY);
}

static __always_inline void ct_remove(const struct ct_key *k)
{
	if (k->family == 4) {
		struct ct_key4 k4;
		ct_key4_of(&k4, k);
		bpf_map_delete_elem(&conntrack4, &k4);
		return;
	}
	bpf_map_delete_elem(&conntrack6, k);
}

/* First fragments that passed, so later fragments follow their verdict. */
struct frag_key {
	__u32 endpoint;
	__u32 id;
	__u8 family;
	__u8 proto;
	__u8 dir;
	__u8 pad;
	__u8 src[16];
	__u8 dst[16];
};

struct frag_entry {
	__u64 last_seen;
	__u32 rule;
	__u32 revision;		/* of the endpoint when the first fragment passed */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_entry);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fragments SEC(".maps");

static __always_inline int icmp_is_echo(__u8 family, __u8 type)
{
	if (family == 4)
		return type == 8 || type == 0;
	return type == 128 || type == 129;
}

static __always_inline int icmp_is_error(__u8 family, __u8 type)
{
	if (family == 4)
		return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

static __always_inline int icmp_is_echo_request(__u8 family, __u8 type)
{
	return family == 4 ? type == 8 : type == 128;
}

static __always_inline int addr_equal(const __u8 *a, const __u8 *b)
{
	__u32 x[4], y[4];
	__builtin_memcpy(x, a, 16);
	__builtin_memcpy(y, b, 16);
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Builds the key of a packet in direction dir; 0 when the packet cannot be
 * tracked (later fragments, ICMP errors, ICMP messages other than echo).
 * An echo's key holds its identifier and the direction its request goes,
 * so that a request and its reply share it and a request the other way
 * does not. */
static __always_inline int ct_key_of(struct ct_key *k, __u32 endpoint, int dir, const struct packet *p)
{
	if (p->later_fragment)
		return 0;
	k->endpoint = endpoint;
	k->proto = p->proto;
	k->family = p->family;
	if (dir == DIR_INGRESS) {
		__builtin_memcpy(k->pod, p->dst, 16);
		__builtin_memcpy(k->peer, p->src, 16);
	} else {
		__builtin_memcpy(k->pod, p->src, 16);
		__builtin_memcpy(k->peer, p->dst, 16);
	}
	if (p->has_port) {
		k->pod_port = dir == DIR_INGRESS ? p->dport : p->sport;
		k->peer_port = dir == DIR_INGRESS ? p->sport : p->dport;
	} else if (p->has_icmp) {
		if (!icmp_is_echo(p->family, p->icmp_type))
			return 0;
		int request_dir = icmp_is_echo_request(p->family, p->icmp_type) ? dir : !dir;
		k->pod_port = p->icmp_id;
		k->peer_port = 1 + request_dir;
	}
	return 1;
}

/* A SYN without ACK, FIN or RST: the first packet of a TCP connection. */
static __always_inline int tcp_opens_connection(const struct packet *p)
{
	return p->proto == PROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST)) == TCP_SYN;
}

static __always_inline __u8 ct_state_of_new(const struct packet *p)
{
	switch (p->proto) {
	case PROTO_TCP:
		if (p->tcp_flags & TCP_RST)
			return CT_TCP_RESET;
		if (p->tcp_flags & TCP_FIN)
			return CT_TCP_CLOSING;
		if ((p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
			return CT_TCP_SYN;
		return CT_TCP_ESTABLISHED;
	case PROTO_UDP:
		return CT_UDP;
	}
	return CT_OTHER;
}

static __always_inline int ct_expired(const struct ct_entry *e, __u64 now)
{
	/* another CPU may have stamped the entry after now was read */
	return now > e->last_seen && now - e->last_seen > ct_timeout_jiffies[e->state & 7];
}

/* Advances the TCP state with a packet of the flow in direction dir. */
static __always_inline void ct_refresh(struct ct_entry *e, const struct packet *p, int dir, __u64 now)
{
	__u8 state = e->state;
	if (p->proto == PROTO_TCP) {
		__u8 f = p->tcp_flags;
		if (f & TCP_RST)
			state = CT_TCP_RESET;
		else if ((f & (TCP_SYN | TCP_ACK)) == TCP_SYN && dir == e->origin)
			state = CT_TCP_SYN;
		else if (f & TCP_FIN)
			state = CT_TCP_CLOSING;
		else if (state == CT_TCP_SYN && dir != e->origin)
			state = CT_TCP_ESTABLISHED;
		else if (state == CT_TCP_RESET && (f & TCP_SYN))
			state = CT_TCP_SYN;
		else if (state == CT_TCP_RESET && (f & TCP_ACK))
			/* without sequence numbers an RST cannot be checked: a
			 * flow that goes on was not reset */
			state = CT_TCP_ESTABLISHED;
	}
	/* last_seen is written at most once a second on an unchanged flow */
	if (state != e->state || (now > e->last_seen && now - e->last_seen >= jiffies_per_second)) {
		e->state = state;
		e->last_seen = now;
	}
}

/* Builds the key of the flow an ICMP error quotes: the quoted packet went
 * the opposite way of the error, from the error's destination. Returns 0
 * when the quote is unusable: not whole inside the error's IP payload, or
 * of a packet the error's destination did not send. */
static __always_inline int ct_key_of_icmp_error(struct __sk_buff *skb, struct ct_key *k, __u32 endpoint, int dir,
						const struct packet *p)
{
	struct packet inner = {};
	__u32 off = p->l4_off + 8;
	__u32 hlen;
	if (p->l4_len < 8 + (p->family == 4 ? 20 : 40))
		return 0;
	if (p->family == 4) {
		__u8 h[20] HEADER_BUF;
		if (load(skb, off, h, 20))
			return 0;
		hlen = (h[0] & 0x0f) * 4;
		if ((h[0] >> 4) != 4 || hlen < 20)
			return 0;
		inner.proto = h[9];
		__builtin_memcpy(inner.src, &h[12], 4);
		__builtin_memcpy(inner.dst, &h[16], 4);
	} else {
		__u8 h[40] HEADER_BUF;
		if (load(skb, off, h, 40))
			return 0;
		if ((h[0] >> 4) != 6)
			return 0;
		hlen = 40;
		inner.proto = h[6];
		__builtin_memcpy(inner.src, &h[8], 16);
		__builtin_memcpy(inner.dst, &h[24], 16);
	}
	inner.family = p->family;
	if (!addr_equal(p->dst, inner.src))
		return 0;
	__u32 quoted = p->l4_len - 8 - (hlen & 0x7f);
	if (p->l4_len < 8 + (hlen & 0x7f))
		return 0;
	__u8 l4[8] HEADER_BUF;
	if (l4_header_need(inner.proto)) {
		if (quoted < 4 || load(skb, off + (hlen & 0x7f), l4, 4))
			return 0;
		inner.has_port = 1;
		inner.sport = ((__u16)l4[0] << 8) | l4[1];
		inner.dport = ((__u16)l4[2] << 8) | l4[3];
	} else if ((inner.proto == PROTO_ICMP && p->family == 4) || (inner.proto == PROTO_ICMPV6 && p->family == 6)) {
		if (quoted < 8 || load(skb, off + (hlen & 0x7f), l4, 8))
			return 0;
		inner.has_icmp = 1;
		inner.icmp_type = l4[0];
		inner.icmp_id = ((__u16)l4[4] << 8) | l4[5];
	}
	return ct_key_of(k, endpoint, dir == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS, &inner);
}

/* Stateless rule lookups: longest CIDR prefix, then the port set. */
#pragma once

#include "common.h"

#define PORT_KEY_BITS_PROTO 40
#define PORT_KEY_BITS_PORT 56

/* Looks the packet up in the inline port entries of v; returns the bits
 * of the longest match, or -1. */
static __always_inline int inline_ports_match(const struct cidr_value *v, __u8 proto, int has_port, __u16 port,
					      __u32 *rule)
{
	int best = -1;
	int i;
#pragma unroll
	for (i = 0; i < INLINE_PORTS; i++) {
		const struct inline_port *e = &v->inline_ports[i];
		if (i >= v->inline_count || e->proto != proto)
			continue;
		int bits = e->bits;
		if (bits) {
			if (!has_port || bits > 16)
				continue;
			if ((port ^ e->port) >> (16 - bits))
				continue;
		}
		if (bits > best) {
			best = bits;
			*rule = e->rule;
		}
	}
	return best;
}

/* The rule + 1 that the dense port set allows proto and port with, 0 for
 * none; -1 when the protocol has no dense table. */
static __always_inline long dense_port_rule(__u32 portset, __u8 proto, __u16 port)
{
	__u32 table;
	if (proto == PROTO_TCP)
		table = 0;
	else if (proto == PROTO_UDP)
		table = 1;
	else if (proto == PROTO_SCTP)
		table = 2;
	else
		return -1;
	__u32 index = ((portset & ~PORTSET_DENSE) * 3 + table) << 16 | port;
	__u32 *r = bpf_map_lookup_elem(&port_dense, &index);
	return r ? *r : 0;
}

/* Reports whether the endpoint's rules of direction dir allow a packet with
 * this peer, protocol and (with has_port) destination port; *rule gets the
 * first rule that allows it. */
static __always_inline int rules_allow(const struct endpoint *ep, int dir, __u8 family, const __u8 *peer,
				       __u8 proto, int has_port, __u16 port, __u32 *rule)
{
	struct cidr_key key = {};
	__u32 table = dir == DIR_EGRESS ? ep->policy[1] : ep->policy[0];
	if (!table)
		return 0;
	void *cidrs = bpf_map_lookup_elem(&cidr_tables, &table);
	if (!cidrs)
		return 0;
	key.tag = bpf_htonl(family == 4);
	if (family == 4) {
		key.prefixlen = 32 + 32;
		__builtin_memcpy(key.addr, peer, 4);
	} else {
		key.prefixlen = 32 + 128;
		__builtin_memcpy(key.addr, peer, 16);
	}
	struct cidr_value *v = bpf_map_lookup_elem(cidrs, &key);
	if (!v)
		return 0;
	if (v->inline_count && inline_ports_match(v, proto, has_port, port, rule) >= 0)
		return 1;
	if (v->portset & PORTSET_DENSE && has_port) {
		long r = dense_port_rule(v->portset, proto, port);
		if (r > 0) {
			*rule = r - 1;
			return 1;
		}
		if (r == 0)
			goto any_protocol;
	}
	if (v->portset) {
		struct port_key pk = {
			.prefixlen = has_port ? PORT_KEY_BITS_PORT : PORT_KEY_BITS_PROTO,
			.portset = bpf_htonl(v->portset),
			.proto = proto,
			.port = {port >> 8, port & 0xff},
		};
		__u32 *r = bpf_map_lookup_elem(&port_rules, &pk);
		if (r) {
			*rule = *r;
			return 1;
		}
	}
any_protocol:
	if (v->flags & CIDR_ANY_PROTOCOL) {
		*rule = v->any_rule;
		return 1;
	}
	return 0;
}

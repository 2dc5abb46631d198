/* A per-CPU, direct-mapped cache of what an endpoint's rules decided for a
 * peer, protocol and destination port: a new flow of a peer and port the
 * rules judged recently skips the CIDR trie and the port sets, whose cost
 * grows with the rules.
 *
 * A revision is one policy of one endpoint, never given again (not even
 * by a restarted agent), and the tables and port sets it leads to are not
 * written while it is live: a decision keyed by revision holds as long as
 * the revision is in use. The cache is off with the flow cache
 * (flow_cache_off), and sized like it. */
#pragma once

#include "common.h"
#include "flowcache.h"
#include "policy.h"

struct rule_slot {
	__u64 key[3];		/* see RULE_KEY0 */
	__u32 rule;
	__u8 filled;
	__u8 allowed;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rule_slot);
	__uint(max_entries, 1024);
} rule_cache SEC(".maps");

/* The key: k0 holds the revision, port, protocol, direction, family and
 * whether the packet has a port; k1 and k2 the peer's address. */
#define RULE_KEY0(ep, dir, family, proto, has_port, port)                                                   \
	((__u64)(ep)->revision << 32 | (__u64)(port) << 16 | (__u64)(proto) << 8 | (__u64)((dir) & 1) << 2 | \
	 (__u64)((has_port) != 0) << 1 | ((family) == 6))

/* rules_allow, through the cache. */
static __always_inline int rules_allow_cached(const struct endpoint *ep, int dir, __u8 family, const __u8 *peer,
					      __u8 proto, int has_port, __u16 port, __u32 *rule)
{
	if (flow_cache_off)
		return rules_allow(ep, dir, family, peer, proto, has_port, port, rule);
	__u64 k0 = RULE_KEY0(ep, dir, family, proto, has_port, port), k1 = 0, k2 = 0;
	if (family == 4) {
		__u32 a;
		__builtin_memcpy(&a, peer, 4);
		k1 = a;
	} else {
		__builtin_memcpy(&k1, peer, 8);
		__builtin_memcpy(&k2, peer + 8, 8);
	}
	__u64 h = k0 ^ k1 ^ k2;
	h ^= h >> 29;
	__u32 index = (h * 0x9e3779b97f4a7c15ULL) >> (64 - (flow_cache_bits & 31));
	struct rule_slot *s = bpf_map_lookup_elem(&rule_cache, &index);
	if (!s)
		return rules_allow(ep, dir, family, peer, proto, has_port, port, rule);
	if (s->key[0] == k0 && s->key[1] == k1 && s->key[2] == k2 && s->filled) {
		*rule = s->rule;
		return s->allowed;
	}
	/* written before the lookup, so that no key outlives the call: on a
	 * veth's TC hooks the programs run with bottom halves off and never
	 * nest on a CPU, and the slot holds no decision until it is filled */
	s->filled = 0;
	s->key[0] = k0;
	s->key[1] = k1;
	s->key[2] = k2;
	int allowed = rules_allow(ep, dir, family, peer, proto, has_port, port, rule);
	s->rule = *rule;
	s->allowed = allowed;
	s->filled = 1;
	return allowed;
}

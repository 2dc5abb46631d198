/* Per-endpoint, per-direction allow/deny counters (per CPU). */
#pragma once

#include "common.h"

static __always_inline void count(__u32 endpoint, int dir, int allowed, __u32 bytes)
{
	__u32 slot = endpoint * 2 + (dir == DIR_EGRESS);
	struct counters *c = bpf_map_lookup_elem(&endpoint_counters, &slot);
	if (!c)
		return;
	if (allowed) {
		c->allow_packets++;
		c->allow_bytes += bytes;
	} else {
		c->deny_packets++;
		c->deny_bytes += bytes;
	}
}

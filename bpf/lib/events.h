/* Verdict events through a ring buffer, rate-limited per CPU. */
#pragma once

#include "common.h"
#include "parse.h"

enum event_reason {
	EVENT_NEW_FLOW = 1,	/* first packet of an allowed flow */
	EVENT_DENY,		/* packet dropped by policy */
	EVENT_MALFORMED,	/* packet dropped by the parsing rules */
	EVENT_REVOKED,		/* tracked flow cut by a policy change */
};

struct event {
	__u64 time_ns;		/* bpf_ktime_get_ns */
	__u32 endpoint;
	__u32 ifindex;
	__u32 rule;
	__u8 dir;
	__u8 allowed;
	__u8 reason;
	__u8 proto;
	__u8 family;
	__u8 pad;
	__u16 sport;
	__u16 dport;
	__u16 pad2;
	__u8 src[16];
	__u8 dst[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* Events per second and burst, per CPU; set from Go. */
volatile const __u64 event_rate = 1000;
volatile const __u64 event_burst = 2000;

struct event_bucket {
	__u64 tokens;
	__u64 last;		/* jiffies */
	__u64 suppressed;	/* events not sent because of the rate limit */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct event_bucket);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} event_buckets SEC(".maps");

/* The CPU's bucket, refilled for time now. */
static __always_inline struct event_bucket *event_bucket_at(__u64 now)
{
	__u32 zero = 0;
	struct event_bucket *b = bpf_map_lookup_elem(&event_buckets, &zero);
	if (!b)
		return 0;
	__u64 elapsed = now > b->last ? now - b->last : 0;
	if (elapsed > jiffies_per_second)
		elapsed = jiffies_per_second;
	__u64 refill = elapsed && jiffies_per_second ? elapsed * event_rate / jiffies_per_second : 0;
	if (refill) {
		b->tokens += refill;
		if (b->tokens > event_burst)
			b->tokens = event_burst;
		b->last = now;
	}
	return b;
}

/* Reports whether b has a token, counting an event suppressed when not. */
static __always_inline int event_bucket_ready(struct event_bucket *b)
{
	if (!b->tokens) {
		b->suppressed++;
		return 0;
	}
	return 1;
}

/* Reports whether an event may be sent now, without taking the token. */
static __always_inline int event_may_send(__u64 now)
{
	struct event_bucket *b = event_bucket_at(now);
	return b && event_bucket_ready(b);
}

static __always_inline int event_take_token(__u64 now)
{
	struct event_bucket *b = event_bucket_at(now);
	if (!b || !event_bucket_ready(b))
		return 0;
	b->tokens--;
	return 1;
}

static __always_inline void emit_event(struct __sk_buff *skb, __u32 endpoint, int dir, const struct packet *p,
				       int allowed, __u8 reason, __u32 rule, __u64 now)
{
	if (!event_take_token(now))
		return;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	e->time_ns = bpf_ktime_get_ns();
	e->endpoint = endpoint;
	e->ifindex = skb->ifindex;
	e->rule = rule;
	e->dir = dir;
	e->allowed = allowed;
	e->reason = reason;
	e->proto = p->proto;
	e->family = p->family;
	e->pad = 0;
	e->sport = p->sport;
	e->dport = p->dport;
	e->pad2 = 0;
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	bpf_ringbuf_submit(e, 0);
}

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Palisade: NetworkPolicy enforcement on a pod's host-side veth.
 * tc_pod_ingress runs on the veth's TC egress hook (traffic to the pod),
 * tc_pod_egress on its TC ingress hook (traffic from the pod). */

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/counters.h"
#include "lib/events.h"
#include "lib/flowcache.h"
#include "lib/rulecache.h"

/* TCX_NEXT / TC_ACT_UNSPEC: let later programs and the stack decide. */
#define VERDICT_PASS -1

static __always_inline int finish(struct __sk_buff *skb, const struct endpoint *ep, int dir, int allowed)
{
	count(ep->id, dir, allowed, skb->len);
	return allowed ? VERDICT_PASS : TC_ACT_SHOT;
}

static __always_inline int isolated_in(const struct endpoint *ep, int dir)
{
	return dir == DIR_EGRESS ? ep->isolated[1] : ep->isolated[0];
}

/* Re-judges a tracked flow by its first packet when the endpoint's policy
 * changed since the entry was written. */
static __always_inline int flow_allowed_now(const struct endpoint *ep, struct ct_entry *e, const struct ct_key *k)
{
	int origin = e->origin == DIR_EGRESS ? DIR_EGRESS : DIR_INGRESS;
	__u32 rule = 0;
	int allowed = 1;
	if (isolated_in(ep, origin)) {
		int has_port = l4_header_need(k->proto) != 0;
		__u16 port = origin == DIR_INGRESS ? k->pod_port : k->peer_port;
		allowed = rules_allow(ep, origin, k->family, k->peer, k->proto, has_port, port, &rule);
	}
	if (allowed) {
		e->revision = ep->revision;
		e->rule = rule;
	}
	return allowed;
}

/* Returns the tracked entry of key if it is live and still allowed. */
static __always_inline struct ct_entry *ct_lookup_live(struct __sk_buff *skb, const struct endpoint *ep, int dir,
						      const struct ct_key *key, const struct packet *p, __u64 now)
{
	struct ct_entry *e = ct_find(key);
	if (!e || ct_expired(e, now))
		return 0;
	if (e->revision == ep->revision || flow_allowed_now(ep, e, key))
		return e;
	ct_remove(key);
	emit_event(skb, ep->id, dir, p, 0, EVENT_REVOKED, 0, now);
	return 0;
}

static __always_inline void fragment_key_of(struct frag_key *fk, __u32 endpoint, int dir, const struct packet *p)
{
	fk->endpoint = endpoint;
	fk->id = p->frag_id;
	fk->family = p->family;
	fk->proto = p->frag_proto;
	fk->dir = dir;
	__builtin_memcpy(fk->src, p->src, 16);
	__builtin_memcpy(fk->dst, p->dst, 16);
}

static __always_inline void remember_first_fragment(const struct endpoint *ep, int dir, const struct packet *p, __u32 rule,
						    __u64 now)
{
	struct frag_key fk = {};
	struct frag_entry fe = {.last_seen = now, .rule = rule, .revision = ep->revision};
	fragment_key_of(&fk, ep->id, dir, p);
	bpf_map_update_elem(&fragments, &fk, &fe, BPF_ANY);
}

/* A later fragment follows a first fragment that passed under the current
 * policy revision. */
static __always_inline int later_fragment_follows(const struct endpoint *ep, int dir, const struct packet *p, __u64 now)
{
	struct frag_key fk = {};
	fragment_key_of(&fk, ep->id, dir, p);
	struct frag_entry *fe = bpf_map_lookup_elem(&fragments, &fk);
	return fe && fe->revision == ep->revision && (now <= fe->last_seen || now - fe->last_seen <= fragment_timeout_jiffies);
}

/* The full path: parse, conntrack, rules. Its verdicts on plain TCP and
 * UDP frames go into the flow cache through fp. A global function: the
 * verifier checks it once, and the compiler keeps the flow cache's hot
 * path, which calls it, free of its register pressure. */
__noinline int enforce_fully(struct __sk_buff *skb, const struct endpoint *ep, int dir, struct flow_probe *fp, __u64 now)
{
	if (!ep || !fp)
		return TC_ACT_SHOT;
	int isolated = isolated_in(ep, dir);

	struct packet p = {};
	int parsed = PARSE_IP;
	if (fp->parsed)
		packet_of_probe(&p, fp);
	else
		parsed = parse_frame(skb, &p);
	if (parsed != PARSE_IP) {
		int allowed = !isolated || parsed == PARSE_ARP;
		if (!allowed)
			emit_event(skb, ep->id, dir, &p, 0, EVENT_MALFORMED, 0, now);
		return finish(skb, ep, dir, allowed);
	}

	if (p.neighbor_discovery)
		return finish(skb, ep, dir, 1);

	struct ct_key key = {};
	__u32 generation_index = 0, generation = 0;
	int tracked = ct_key_of(&key, ep->id, dir, &p);
	int opens = tcp_opens_connection(&p);
	if (tracked) {
		if (fp->has_slot) {
			/* read before the lookup: an insert after it shows */
			generation_index = ct_generation_index(&key);
			__u32 *g = ct_generation(generation_index);
			generation = g ? *g : 0;
			flow_cache_order_loads(fp);
		}
		/* A SYN opens a new connection: the rules judge it, whatever
		 * an older flow of the same addresses and ports left. */
		struct ct_entry *e = opens ? 0 : ct_lookup_live(skb, ep, dir, &key, &p, now);
		if (e) {
			ct_refresh(e, &p, dir, now);
			if (p.first_fragment)
				remember_first_fragment(ep, dir, &p, e->rule, now);
			flow_cache_allow(fp, ep, now);
			return finish(skb, ep, dir, 1);
		}
	} else if (p.later_fragment) {
		if (later_fragment_follows(ep, dir, &p, now))
			return finish(skb, ep, dir, 1);
	} else if (p.has_icmp && icmp_is_error(p.family, p.icmp_type)) {
		struct ct_key quoted = {};
		if (ct_key_of_icmp_error(skb, &quoted, ep->id, dir, &p) &&
		    ct_lookup_live(skb, ep, dir, &quoted, &p, now))
			return finish(skb, ep, dir, 1);
	}

	__u32 rule = 0;
	int allowed = 1;
	if (isolated)
		allowed = rules_allow_cached(ep, dir, p.family, dir == DIR_INGRESS ? p.src : p.dst, p.proto, p.has_port,
					     p.dport, &rule);
	if (!allowed) {
		/* A flow tracked under another origin may follow a denied SYN:
		 * the deny is not its verdict to hold. */
		if (tracked && !(opens && ct_find(&key)))
			flow_cache_deny(fp, ep, generation_index, generation);
		emit_event(skb, ep->id, dir, &p, 0, EVENT_DENY, 0, now);
		return finish(skb, ep, dir, 0);
	}
	if (tracked) {
		struct ct_entry n = {
			.last_seen = now,
			.revision = ep->revision,
			.rule = rule,
			.state = ct_state_of_new(&p),
			.origin = dir,
		};
		if (ct_insert(&key, &n) == 0) {
			ct_generation_bump(&key);
			flow_cache_allow(fp, ep, now);
		}
		emit_event(skb, ep->id, dir, &p, 1, EVENT_NEW_FLOW, rule, now);
	}
	if (p.first_fragment)
		remember_first_fragment(ep, dir, &p, rule, now);
	return finish(skb, ep, dir, 1);
}

static __always_inline int enforce(struct __sk_buff *skb, int dir)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = endpoint_of(ifindex);
	if (!ep)
		return VERDICT_PASS;
	__u64 now = bpf_jiffies64();
	struct flow_probe fp;
	switch (flow_cache_verdict(skb, ifindex, ep, dir, &fp, now)) {
	case FLOW_ALLOW:
		return finish(skb, ep, dir, 1);
	case FLOW_DENY:
		/* the full path sends the event, when one may be sent */
		if (!event_may_send(now))
			return finish(skb, ep, dir, 0);
	}
	return enforce_fully(skb, ep, dir, &fp, now);
}

SEC("tc")
int tc_pod_ingress(struct __sk_buff *skb)
{
	return enforce(skb, DIR_INGRESS);
}

SEC("tc")
int tc_pod_egress(struct __sk_buff *skb)
{
	return enforce(skb, DIR_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

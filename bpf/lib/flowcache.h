/* A per-CPU, direct-mapped cache of the verdicts the full path reached on
 * plain TCP and UDP packets, in front of conntrack and the rules.
 *
 * Its key is the veth's ifindex, the direction and what is read straight
 * from the frame (addresses, ports, protocol): none of it waits for the
 * endpoint record, which is loaded meanwhile. The endpoint revision, unique
 * to one policy of one endpoint, tells a reused ifindex apart. A slot holds
 * a verdict only while nothing it depends on changed:
 * - allow: the flow's conntrack entry was live and judged under the
 *   endpoint's current revision less than flow_cache_jiffies ago, and the
 *   packet carries no SYN, FIN or RST (which change the TCP state);
 *   one slot per direction;
 * - deny: no conntrack entry, the rules denied it under the current
 *   revision, and no entry was inserted since into the flow's conntrack
 *   generation bucket (ct_generations, bumped after every insert, so that
 *   the reply to a flow the pod opens later is not held by an old deny).
 * flow_cache_epoch, raised from Go when it deletes conntrack entries,
 * drops every slot at once. A packet that the fast parse does not fully
 * vouch for (IPv4 options, IPv6 extension headers, fragments, short or
 * paged frames, other protocols) always takes the full path. */
#pragma once

#include "common.h"
#include "conntrack.h"

#define FLOW_KEY_WORDS 6

enum flow_verdict {
	FLOW_EMPTY = 0,
	FLOW_ALLOW,
	FLOW_DENY,
};

struct flow_slot {
	__u64 key[FLOW_KEY_WORDS];
	__u64 stamp;		/* jiffies when an allow was confirmed */
	__u32 revision;		/* of the endpoint that reached the verdict */
	__u32 epoch;
	__u32 generation;	/* deny: of ct_generations[generation_index] */
	__u16 generation_index;
	__u8 verdict;
	__u8 pad;
};

/* Slots per CPU: 1 << flow_cache_bits; sizes are replaced from Go. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flow_slot);
	__uint(max_entries, 1024);
} flow_cache SEC(".maps");

volatile const __u32 flow_cache_bits = 10;
/* How long a confirmed allow stands without the full path; 0 turns
 * allows off. Set from Go below the shortest conntrack timeout. */
volatile const __u64 flow_cache_jiffies = 250;
volatile __u32 flow_cache_epoch;
/* Set from Go to send every packet through the full path. */
volatile __u32 flow_cache_off;
/* Set from Go on CPUs that may reorder a load with later loads (arm64 and
 * the others but x86 and s390x). There the full path fences after reading
 * the epoch and the conntrack generation and before looking the flow up,
 * or a slot could pair a new epoch or generation with conntrack as it was
 * before the change. Elsewhere the verifier drops the fence as dead code. */
volatile const __u8 loads_reorder;

/* 2048 buckets of 8 bytes (array values are 8-byte aligned): small
 * enough for the kernel to allocate from its linearly mapped memory, so
 * that the random bucket every first packet touches costs no page walk.
 * A bucket shared by unrelated flows only ends a cached deny early. */
#define CT_GENERATIONS (1 << 11)

/* Pinned: programs of an older and a newer agent may run side by side
 * while links move, and both must see each other's inserts. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, CT_GENERATIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_generations SEC(".maps");

/* The generation bucket of a conntrack key: the same for both directions
 * of a flow, since conntrack keys are seen from the pod. */
static __always_inline __u32 ct_generation_index(const struct ct_key *k)
{
	__u64 a, b, c;
	__builtin_memcpy(&a, k->pod, 8);
	__builtin_memcpy(&b, k->peer, 8);
	__builtin_memcpy(&c, &k->pod[8], 8);
	__u64 h = (a ^ (__u64)k->endpoint << 32 ^ k->proto) * 0x9e3779b97f4a7c15ULL;
	__u64 d;
	__builtin_memcpy(&d, &k->peer[8], 8);
	h ^= (b ^ c ^ d ^ ((__u64)k->pod_port << 16 | k->peer_port)) * 0xc2b2ae3d27d4eb4fULL;
	return (h >> 48) & (CT_GENERATIONS - 1);
}

static __always_inline __u32 *ct_generation(__u32 index)
{
	return bpf_map_lookup_elem(&ct_generations, &index);
}

/* Called after every conntrack insert. */
static __always_inline void ct_generation_bump(const struct ct_key *k)
{
	__u32 *g = ct_generation(ct_generation_index(k));
	if (g)
		__sync_fetch_and_add(g, 1);
}

/* What the fast parse found: the frame's key and slot, when the frame is
 * plain enough. Only scalars: the full path takes it as an argument of a
 * global function. */
struct flow_probe {
	__u64 key[FLOW_KEY_WORDS];
	/* read before conntrack: Go raises it after deleting entries, so a
	 * verdict reached on an entry deleted meanwhile is filled stale */
	__u32 epoch;
	__u32 slot_index;
	__u8 has_slot;
	__u8 parsed;		/* key holds the frame: see packet_of_probe */
	__u8 tcp_state_change;	/* SYN, FIN or RST */
	__u8 tcp_flags;
	__u16 l4_len;
	__u8 pad[2];
};

#define FLOW_TCP_STATE_FLAGS (TCP_SYN | TCP_FIN | TCP_RST)

/* The frame of a probe, once its headers passed the checks. */
struct flow_frame {
	__u64 key[FLOW_KEY_WORDS];
	__u32 l4_len;
	__u8 tcp_flags;
};

/* Reads the key of an option-less IPv4 (family 4) or extension-less IPv6
 * (family 6) TCP/UDP frame whose headers are in the linear data; 0 for
 * any other frame. The checks are the full parser's for such frames, so
 * both judge a frame under the same key alike. */
static __always_inline int flow_frame_of(struct __sk_buff *skb, __u32 ifindex, int dir, const int family,
					 struct flow_frame *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *ip = data + ETH_HLEN;
	__u32 room = skb->len - ETH_HLEN;
	__u8 proto, *l4;
	__u32 l4_len;
	if (family == 4) {
		if ((void *)(ip + 20 + 8) > data_end)
			return 0;
		if (ip[0] != 0x45 || (*(__u16 *)(ip + 6) & bpf_htons(0x3fff)))
			return 0;
		__u32 total = bpf_ntohs(*(__u16 *)(ip + 2));
		if (total < 20 || total > room)
			return 0;
		proto = ip[9];
		l4 = ip + 20;
		l4_len = total - 20;
	} else {
		if ((void *)(ip + 40 + 8) > data_end || (ip[0] >> 4) != 6)
			return 0;
		l4_len = bpf_ntohs(*(__u16 *)(ip + 4));
		if (40 + l4_len > room)
			return 0;
		proto = ip[6];
		l4 = ip + 40;
	}
	if (proto == PROTO_TCP) {
		if (l4_len < 20 || (void *)(l4 + 20) > data_end)
			return 0;
		f->tcp_flags = l4[13];
	} else if (proto == PROTO_UDP) {
		if (l4_len < 8)
			return 0;
		f->tcp_flags = 0;
	} else {
		return 0;
	}
	f->l4_len = l4_len;
	f->key[0] = (__u64)ifindex << 32 | (__u64)family << 16 | (__u64)dir << 8 | proto;
	if (family == 4) {
		f->key[1] = *(__u64 *)(ip + 12);
		f->key[2] = *(__u32 *)l4;
		f->key[3] = 0;
		f->key[4] = 0;
		f->key[5] = 0;
	} else {
		f->key[1] = *(__u64 *)(ip + 8);
		f->key[2] = *(__u64 *)(ip + 16);
		f->key[3] = *(__u64 *)(ip + 24);
		f->key[4] = *(__u64 *)(ip + 32);
		f->key[5] = *(__u32 *)l4;
	}
	return 1;
}

static __always_inline __u32 flow_slot_index(const __u64 *key, const int family)
{
	__u64 h = key[0] ^ key[1] ^ key[2];
	if (family == 6)
		h ^= key[3] ^ key[4] ^ key[5];
	h ^= h >> 29;
	return (h * 0x9e3779b97f4a7c15ULL) >> (64 - (flow_cache_bits & 31));
}

/* An IPv4 key's words 3 to 5 are zero in the slot as in the frame. */
static __always_inline int flow_key_equal(const __u64 *a, const __u64 *b, const int family)
{
	if ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]))
		return 0;
	return family == 4 || ((a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

static __always_inline int flow_slot_verdict(const struct flow_slot *s, const struct flow_frame *f, const int family,
					     const struct endpoint *ep, __u32 epoch, __u64 now)
{
	if (!flow_key_equal(s->key, f->key, family) || s->revision != ep->revision || s->epoch != epoch)
		return FLOW_EMPTY;
	if (s->verdict == FLOW_ALLOW)
		return !(f->tcp_flags & FLOW_TCP_STATE_FLAGS) && now - s->stamp < flow_cache_jiffies ? FLOW_ALLOW
												     : FLOW_EMPTY;
	if (s->verdict == FLOW_DENY) {
		__u32 *g = ct_generation(s->generation_index);
		return g && *g == s->generation ? FLOW_DENY : FLOW_EMPTY;
	}
	return FLOW_EMPTY;
}

/* The probe of one family: the key stays in registers, and fp is written
 * only when the slot does not allow the frame. */
static __always_inline int flow_cache_probe(struct __sk_buff *skb, __u32 ifindex, const struct endpoint *ep, int dir,
					    struct flow_probe *fp, __u64 now, __u32 epoch, const int family)
{
	struct flow_frame f;
	if (!flow_frame_of(skb, ifindex, dir, family, &f))
		return FLOW_EMPTY;
	__u32 index = flow_slot_index(f.key, family);
	struct flow_slot *s = bpf_map_lookup_elem(&flow_cache, &index);
	if (!s)
		return FLOW_EMPTY;
	int verdict = flow_slot_verdict(s, &f, family, ep, epoch, now);
	if (verdict == FLOW_ALLOW)
		return verdict;
	__builtin_memcpy(fp->key, f.key, sizeof(fp->key));
	fp->slot_index = index;
	fp->has_slot = 1;
	fp->parsed = 1;
	fp->tcp_flags = f.tcp_flags;
	fp->tcp_state_change = (f.tcp_flags & FLOW_TCP_STATE_FLAGS) != 0;
	fp->l4_len = f.l4_len;
	return verdict;
}

/* Returns the verdict the frame's slot holds for it: FLOW_ALLOW, FLOW_DENY
 * or FLOW_EMPTY. Unless it allows, fp tells the full path what the probe
 * found (has_slot stays 0 for a frame the cache does not take). */
static __always_inline int flow_cache_verdict(struct __sk_buff *skb, __u32 ifindex, const struct endpoint *ep,
					      int dir, struct flow_probe *fp, __u64 now)
{
	__u32 epoch = flow_cache_epoch;
	fp->epoch = epoch;
	fp->has_slot = 0;
	fp->parsed = 0;
	if (flow_cache_off)
		return FLOW_EMPTY;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN > data_end)
		return FLOW_EMPTY;
	__u16 type = *(__u16 *)(data + 12);
	if (type == bpf_htons(ETH_P_IP))
		return flow_cache_probe(skb, ifindex, ep, dir, fp, now, epoch, 4);
	if (type == bpf_htons(ETH_P_IPV6))
		return flow_cache_probe(skb, ifindex, ep, dir, fp, now, epoch, 6);
	return FLOW_EMPTY;
}

/* Fills p as parse_frame fills it for the frame whose key flow_frame_of
 * read: an option-less IPv4 or extension-less IPv6 TCP/UDP packet, no
 * fragment, headers whole. p is zeroed. */
static __always_inline void packet_of_probe(struct packet *p, const struct flow_probe *fp)
{
	__u8 proto = fp->key[0];
	__u8 family = fp->key[0] >> 16;
	__u32 ports;
	if (family == 4) {
		__builtin_memcpy(p->src, &fp->key[1], 4);
		__builtin_memcpy(p->dst, (const __u8 *)&fp->key[1] + 4, 4);
		ports = fp->key[2];
		p->l4_off = ETH_HLEN + 20;
	} else {
		__builtin_memcpy(p->src, &fp->key[1], 8);
		__builtin_memcpy(&p->src[8], &fp->key[2], 8);
		__builtin_memcpy(p->dst, &fp->key[3], 8);
		__builtin_memcpy(&p->dst[8], &fp->key[4], 8);
		ports = fp->key[5];
		p->l4_off = ETH_HLEN + 40;
	}
	p->family = family;
	p->proto = proto;
	p->frag_proto = proto;
	p->l4_len = fp->l4_len;
	p->sport = bpf_ntohs((__u16)ports);
	p->dport = bpf_ntohs((__u16)(ports >> 16));
	p->has_port = 1;
	p->tcp_flags = fp->tcp_flags;
}

static __always_inline struct flow_slot *flow_slot_of(struct flow_probe *fp)
{
	if (!fp->has_slot)
		return 0;
	return bpf_map_lookup_elem(&flow_cache, &fp->slot_index);
}

/* Orders the loads before it before the loads after it. A fetching atomic
 * is fully ordered on every BPF JIT (arm64: ldaddal); adding 0 to a word
 * of this CPU's own slot changes nothing and touches no other CPU's line. */
static __always_inline void flow_cache_order_loads(struct flow_probe *fp)
{
	if (!loads_reorder)
		return;
	struct flow_slot *s = flow_slot_of(fp);
	if (!s)
		return;
	__u64 old = __sync_fetch_and_add(&s->stamp, 0);
	/* a used result keeps the fetching form: without it, arm64 gets an
	 * unordered stadd */
	asm volatile("" : "+r"(old));
}

static __always_inline void flow_cache_fill(struct flow_slot *s, const struct flow_probe *fp, const struct endpoint *ep,
					    __u8 verdict)
{
	__builtin_memcpy(s->key, fp->key, sizeof(s->key));
	s->revision = ep->revision;
	s->epoch = fp->epoch;
	s->verdict = verdict;
}

/* Remembers that the full path allowed a packet of a live, tracked flow
 * at time now. Packets that hit the slot change no TCP state: without
 * SYN, FIN or RST only a reply in state SYN would (to established), and
 * the reply has a key of its own, whose slot the full path fills. */
static __always_inline void flow_cache_allow(struct flow_probe *fp, const struct endpoint *ep, __u64 now)
{
	if (fp->tcp_state_change)
		return;
	struct flow_slot *s = flow_slot_of(fp);
	if (!s)
		return;
	s->stamp = now;
	flow_cache_fill(s, fp, ep, FLOW_ALLOW);
}

/* Remembers that the rules denied an untracked packet; generation is the
 * flow's bucket as read before conntrack was looked up. */
static __always_inline void flow_cache_deny(struct flow_probe *fp, const struct endpoint *ep, __u32 index,
					    __u32 generation)
{
	struct flow_slot *s = flow_slot_of(fp);
	if (!s)
		return;
	s->generation_index = index;
	s->generation = generation;
	flow_cache_fill(s, fp, ep, FLOW_DENY);
}

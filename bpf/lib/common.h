/* Types and maps shared by the Palisade TC programs. */
#pragma once

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf_helpers.h>
#include <bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86DD

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define PROTO_SCTP 132

/* HZ of the running kernel, set from Go: timestamps are bpf_jiffies64(). */
volatile const __u64 jiffies_per_second = 250;

enum direction {
	DIR_INGRESS = 0,
	DIR_EGRESS = 1,
};

/* Value of endpoint_records: what one endpoint (a host-side veth) enforces. */
struct endpoint {
	__u32 id;		/* slot: index of the counters, part of conntrack keys */
	__u32 revision;		/* node-wide increasing; conntrack entries carry it */
	__u32 policy[2];	/* per direction: id of the CIDR table in cidr_tables */
	__u8 isolated[2];	/* per direction */
	__u8 pad[2];
	__u32 ifindex;		/* of the veth whose reference leads here */
	__u64 content_hash;	/* of the programmed policy.Endpoint, for no-op updates */
};

/* Key of a CIDR table, an LPM trie: tag is big-endian 1 for IPv4 (the
 * address in the first 4 bytes of addr), 0 for IPv6, so one trie holds
 * both families of a direction's rules. */
struct cidr_key {
	__u32 prefixlen;
	__u32 tag;
	__u8 addr[16];
};

#define CIDR_ANY_PROTOCOL 1

/* A port entry kept in the CIDR value itself, saving the port_rules
 * lookup for the common rules with one or two ports. Same meaning as a
 * port_rules entry: bits 0 allows every packet of proto, else the ports
 * sharing their first bits bits with port; the longest match wins. */
struct inline_port {
	__u32 rule;
	__u16 port;
	__u8 proto;
	__u8 bits;
};

#define INLINE_PORTS 2

/* Value of a CIDR table: what the longest matching prefix allows. */
struct cidr_value {
	__u32 portset;		/* 0: none in port_rules */
	__u32 any_rule;		/* rule allowing every protocol, if flags has CIDR_ANY_PROTOCOL */
	__u32 flags;
	__u32 inline_count;	/* used entries of inline_ports (then portset is 0) */
	struct inline_port inline_ports[INLINE_PORTS];
};

/* Key of the port_rules LPM trie: prefixlen 40 is "every packet of proto",
 * 40 + n the ports sharing their first n bits. */
struct port_key {
	__u32 prefixlen;
	__u32 portset;		/* big-endian */
	__u8 proto;
	__u8 port[2];		/* big-endian */
} __attribute__((packed));

struct counters {
	__u64 allow_packets;
	__u64 allow_bytes;
	__u64 deny_packets;
	__u64 deny_bytes;
};

/* Sizes are replaced from Go before loading.
 *
 * A veth's ifindex leads to its endpoint's record in two steps: a record
 * reference (index + 1, 0 for no endpoint) from endpoint_refs, an array for
 * ifindexes below its size (an inlined lookup), or from endpoint_refs_hash
 * for larger ones; then the record in endpoint_records. Each endpoint slot
 * owns two records: an update writes the one not in use, then switches the
 * reference with one 4-byte write, so a packet never sees half an update. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint_refs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint_refs_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct endpoint);
	__uint(max_entries, 4096 * 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint_records SEC(".maps");

/* A reference that closes an interface without a record of its own, for
 * endpoints that found every slot in use: the endpoint of an id no slot
 * has, isolated both ways, with no rules. Not const: the verifier passes
 * no read-only memory to the full path's global function. */
#define REF_CLOSED 0xffffffff
#define ENDPOINT_ID_CLOSED 0xffffff

static struct endpoint closed_endpoint = {.id = ENDPOINT_ID_CLOSED, .isolated = {1, 1}};

static __always_inline struct endpoint *endpoint_of(__u32 ifindex)
{
	__u32 *ref = bpf_map_lookup_elem(&endpoint_refs, &ifindex);
	if (!ref)
		ref = bpf_map_lookup_elem(&endpoint_refs_hash, &ifindex);
	if (!ref)
		return 0;
	__u32 r = *ref;
	if (!r)
		return 0;
	__u32 index = r - 1;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoint_records, &index);
	/* REF_CLOSED leads past the records. A reference read while user
	 * space writes it (the kernel promises no whole read of an array
	 * value) may lead past them too, or to another veth's record, which
	 * must not judge this veth's packets. */
	if (!ep || ep->ifindex != ifindex)
		return &closed_endpoint;
	return ep;
}

/* Every distinct direction's rules are a trie of their own, so that a
 * lookup's depth follows its own rules, not the node's: cidr_tables holds
 * them by table id, the endpoint record's policy[dir] (0: none). Tries
 * are created from Go; this one is the template. */
struct cidr_table {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(key_size, sizeof(struct cidr_key));
	__uint(value_size, sizeof(struct cidr_value));
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

/* Keeps the tables' key and value types in BTF, for Go (bpf2go). */
volatile const struct cidr_key cidr_table_key_type;
volatile const struct cidr_value cidr_table_value_type;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct cidr_table);
} cidr_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct port_key);
	__type(value, __u32);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} port_rules SEC(".maps");

/* Large port sets also get a dense copy: one rule per port and protocol,
 * so a lookup costs one array read however many entries the set has. Such
 * a set's id is PORTSET_DENSE | its slot; its port_rules entries stay, for
 * packets without ports. A slot holds three tables of 65,536 ports (TCP,
 * UDP, SCTP); a value is the rule + 1, 0 where no entry matches. */
#define PORTSET_DENSE 0x80000000u

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 8 * 3 * 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} port_dense SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(max_entries, 4096 * 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint_counters SEC(".maps");

package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/palisade-net/palisade/policy"
)

// DirCounters are the packets and bytes one direction allowed and denied.
type DirCounters struct {
	AllowPackets, AllowBytes, DenyPackets, DenyBytes uint64
}

// Counters of one endpoint, summed over CPUs.
type Counters struct {
	Ingress, Egress DirCounters
}

// Counters returns the endpoint's counters since its first SetPolicy.
func (d *Dataplane) Counters(ifindex int) (Counters, error) {
	d.mu.Lock()
	rec := d.endpoints[ifindex]
	d.mu.Unlock()
	if rec == nil {
		return Counters{}, fmt.Errorf("counters: ifindex %d has no policy", ifindex)
	}
	var out Counters
	if rec.shared() {
		return out, nil // the shared closed endpoint counts nothing
	}
	for dir, dst := range []*DirCounters{&out.Ingress, &out.Egress} {
		var perCPU []palisadeCounters
		if err := d.objs.EndpointCounters.Lookup(rec.value.Id*2+uint32(dir), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("counters of ifindex %d: %w", ifindex, err)
		}
		for _, c := range perCPU {
			dst.AllowPackets += c.AllowPackets
			dst.AllowBytes += c.AllowBytes
			dst.DenyPackets += c.DenyPackets
			dst.DenyBytes += c.DenyBytes
		}
	}
	return out, nil
}

// Event is a verdict the programs reported: the first packet of each new
// flow and every drop, as far as the rate limit lets them through.
type Event struct {
	Time       time.Time
	EndpointID uint32
	Ifindex    int
	Direction  policy.Dir
	Allowed    bool
	// Reason is "new-flow", "deny" (no rule allows it), "malformed" (the
	// parsing rules drop it) or "revoked" (a tracked flow the new policy
	// denies).
	Reason   string
	Protocol policy.Protocol
	Src, Dst netip.Addr
	// Ports are 0 for port-less packets.
	SrcPort, DstPort uint16
	// RuleID is the rule that allowed a new flow (0 when the direction is
	// not isolated, and for drops).
	RuleID uint32
}

var eventReasons = map[uint8]string{1: "new-flow", 2: "deny", 3: "malformed", 4: "revoked"}

const eventSize = 64

// decodeEvent reads struct event of bpf/lib/events.h.
func decodeEvent(b []byte, bootOffset time.Duration) (Event, error) {
	if len(b) < eventSize {
		return Event{}, fmt.Errorf("event of %d bytes, want %d", len(b), eventSize)
	}
	le := binary.LittleEndian
	e := Event{
		Time:       time.Unix(0, int64(le.Uint64(b[0:8]))).Add(bootOffset),
		EndpointID: le.Uint32(b[8:12]),
		Ifindex:    int(le.Uint32(b[12:16])),
		RuleID:     le.Uint32(b[16:20]),
		Direction:  policy.Dir(b[20]),
		Allowed:    b[21] != 0,
		Reason:     eventReasons[b[22]],
		Protocol:   policy.Protocol(b[23]),
		SrcPort:    le.Uint16(b[26:28]),
		DstPort:    le.Uint16(b[28:30]),
	}
	if b[24] == 4 {
		e.Src = netip.AddrFrom4([4]byte(b[32:36]))
		e.Dst = netip.AddrFrom4([4]byte(b[48:52]))
	} else {
		e.Src = netip.AddrFrom16([16]byte(b[32:48]))
		e.Dst = netip.AddrFrom16([16]byte(b[48:64]))
	}
	return e, nil
}

func monotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// ReadEvents calls fn for each event until ctx is done. Only one reader
// should run at a time.
func (d *Dataplane) ReadEvents(ctx context.Context, fn func(Event)) error {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return fmt.Errorf("open event ring: %w", err)
	}
	defer rd.Close()
	stop := context.AfterFunc(ctx, func() { rd.Close() })
	defer stop()
	bootOffset := time.Duration(time.Now().UnixNano()) - monotonicNow()
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read events: %w", err)
		}
		e, err := decodeEvent(rec.RawSample, bootOffset)
		if err != nil {
			return err
		}
		fn(e)
	}
}

// SuppressedEvents counts the events the rate limit kept out of the ring.
func (d *Dataplane) SuppressedEvents() (uint64, error) {
	var perCPU []palisadeEventBucket
	if err := d.objs.EventBuckets.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("event buckets: %w", err)
	}
	var n uint64
	for _, b := range perCPU {
		n += b.Suppressed
	}
	return n, nil
}

// testHookAfterGCWalk, when set by a test, runs between GarbageCollect's
// walk of the maps and its deletions, given the number of entries the walk
// found of endpoints gone.
var testHookAfterGCWalk func(gone int)

// GarbageCollect deletes the conntrack and fragment entries idle longer
// than their timeout at time now (a time before the present counts as the
// present), and those of endpoints no longer programmed.
func (d *Dataplane) GarbageCollect(now time.Time) (int, error) {
	liveBefore := d.liveEndpointIDs()
	jiffies, err := d.clock.now()
	if err != nil {
		return 0, err
	}
	if ahead := now.Sub(time.Now()); ahead > 0 {
		jiffies += d.clock.ticks(ahead)
	}
	timeouts := d.cfg.Timeouts.byState(d.clock)
	expired := func(last uint64, timeout uint64) bool { return jiffies > last && jiffies-last > timeout }

	fragmentTimeout := d.clock.ticks(d.cfg.Timeouts.Fragment)
	stale := func(endpoint uint32, last, timeout uint64) bool {
		return !liveBefore[endpoint] || expired(last, timeout)
	}
	keys4, err4 := collectKeys(d.objs.Conntrack4, func(k palisadeCtKey4, v palisadeCtEntry) bool {
		return stale(k.endpoint(), v.LastSeen, timeouts[v.State&7])
	})
	keys6, err6 := collectKeys(d.objs.Conntrack6, func(k palisadeCtKey, v palisadeCtEntry) bool {
		return stale(k.Endpoint, v.LastSeen, timeouts[v.State&7])
	})
	fragKeys, errFrag := collectKeys(d.objs.Fragments, func(k palisadeFragKey, v palisadeFragEntry) bool {
		return stale(k.Endpoint, v.LastSeen, fragmentTimeout)
	})
	if err := errors.Join(err4, err6, errFrag); err != nil {
		return 0, err
	}
	// Entries of endpoints gone are deleted under the lock, and only while
	// their slot is still free: an endpoint given the slot meanwhile (a pod
	// removed and added again gets the same one) makes the same keys.
	gone := func(endpoint uint32) bool { return !liveBefore[endpoint] }
	gone4, keys4 := partition(keys4, func(k palisadeCtKey4) bool { return gone(k.endpoint()) })
	gone6, keys6 := partition(keys6, func(k palisadeCtKey) bool { return gone(k.Endpoint) })
	goneFrag, fragKeys := partition(fragKeys, func(k palisadeFragKey) bool { return gone(k.Endpoint) })
	if testHookAfterGCWalk != nil {
		testHookAfterGCWalk(len(gone4) + len(gone6) + len(goneFrag))
	}
	d.mu.Lock()
	live := d.liveEndpointIDsLocked()
	gone4 = slices.DeleteFunc(gone4, func(k palisadeCtKey4) bool { return live[k.endpoint()] })
	gone6 = slices.DeleteFunc(gone6, func(k palisadeCtKey) bool { return live[k.Endpoint] })
	goneFrag = slices.DeleteFunc(goneFrag, func(k palisadeFragKey) bool { return live[k.Endpoint] })
	n := deleteKeys(d.objs.Conntrack4, gone4) + deleteKeys(d.objs.Conntrack6, gone6) + deleteKeys(d.objs.Fragments, goneFrag)
	d.mu.Unlock()
	// The flow caches need no drop: an allow they hold expires long before
	// its entry (flowCacheHold), and entries of endpoints no longer
	// programmed are judged under another revision if their slot returns.
	return n + deleteKeys(d.objs.Conntrack4, keys4) + deleteKeys(d.objs.Conntrack6, keys6) + deleteKeys(d.objs.Fragments, fragKeys), nil
}

// partition splits keys into those pred holds for and the others.
func partition[K any](keys []K, pred func(K) bool) (yes, no []K) {
	for _, k := range keys {
		if pred(k) {
			yes = append(yes, k)
		} else {
			no = append(no, k)
		}
	}
	return yes, no
}

// SetFlowCache turns the programs' flow cache on (the default) or off.
// Off, every packet takes the full path: parse, conntrack, rules; for
// measurements and to rule the cache out when debugging.
func (d *Dataplane) SetFlowCache(on bool) error {
	var off uint32
	if !on {
		off = 1
	}
	if err := d.objs.FlowCacheOff.Set(off); err != nil {
		return fmt.Errorf("turn flow cache on=%v: %w", on, err)
	}
	return d.dropFlowCache()
}

// dropFlowCache empties the programs' flow caches, which may hold allows
// of flows whose conntrack entries were just deleted.
func (d *Dataplane) dropFlowCache() error {
	var epoch uint32
	if err := d.objs.FlowCacheEpoch.Get(&epoch); err != nil {
		return fmt.Errorf("read flow cache epoch: %w", err)
	}
	if err := d.objs.FlowCacheEpoch.Set(epoch + 1); err != nil {
		return fmt.Errorf("drop flow cache: %w", err)
	}
	return nil
}

// endpoint is the slot of the endpoint an IPv4 flow belongs to.
func (k palisadeCtKey4) endpoint() uint32 { return k.EndpointProto >> 8 }

// collectKeys returns the keys of m's entries that match.
func collectKeys[K, V any](m *ebpf.Map, match func(K, V) bool) ([]K, error) {
	var keys []K
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		if match(k, v) {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %v: %w", m, err)
	}
	return keys, nil
}

func (d *Dataplane) liveEndpointIDs() map[uint32]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.liveEndpointIDsLocked()
}

func (d *Dataplane) liveEndpointIDsLocked() map[uint32]bool {
	live := map[uint32]bool{}
	for _, rec := range d.endpoints {
		live[rec.value.Id] = true
	}
	return live
}

func deleteKeys[K any](m *ebpf.Map, keys []K) int {
	n := 0
	for i := range keys {
		if m.Delete(&keys[i]) == nil {
			n++
		}
	}
	return n
}

// forgetEndpointState deletes the conntrack and fragment entries of the
// endpoint ids forget reports.
func (d *Dataplane) forgetEndpointState(forget func(id uint32) bool) (int, error) {
	keys4, err4 := collectKeys(d.objs.Conntrack4, func(k palisadeCtKey4, _ palisadeCtEntry) bool { return forget(k.endpoint()) })
	keys6, err6 := collectKeys(d.objs.Conntrack6, func(k palisadeCtKey, _ palisadeCtEntry) bool { return forget(k.Endpoint) })
	fragKeys, errFrag := collectKeys(d.objs.Fragments, func(k palisadeFragKey, _ palisadeFragEntry) bool { return forget(k.Endpoint) })
	n := deleteKeys(d.objs.Conntrack4, keys4) + deleteKeys(d.objs.Conntrack6, keys6) + deleteKeys(d.objs.Fragments, fragKeys)
	return n, errors.Join(err4, err6, errFrag, d.dropFlowCache())
}

// MapUsage is how full one map is.
type MapUsage struct {
	Used, Capacity int
}

// Occupancy reports the entries used per map (conntrack and fragments
// counted by walking them): "conntrack" holds the IPv4 flows,
// "conntrack_ipv6" the IPv6 ones.
func (d *Dataplane) Occupancy() (map[string]MapUsage, error) {
	d.mu.Lock()
	out := map[string]MapUsage{
		"endpoints":   {Used: len(d.endpoints), Capacity: d.cfg.MaxEndpoints},
		"cidr_rules":  {Used: d.cidrUsed, Capacity: d.cfg.RuleCapacity},
		"cidr_tables": {Used: len(d.policies), Capacity: d.cfg.MaxTables},
		"port_rules":  {Used: d.portUsed, Capacity: d.cfg.PortRuleCapacity},
		"port_dense":  {Used: countTrue(d.denseUsed), Capacity: len(d.denseUsed)},
	}
	d.mu.Unlock()
	for name, m := range map[string]*ebpf.Map{"conntrack": d.objs.Conntrack4, "conntrack_ipv6": d.objs.Conntrack6, "fragments": d.objs.Fragments} {
		n, err := countEntries(m)
		if err != nil {
			return nil, fmt.Errorf("count %s: %w", name, err)
		}
		out[name] = MapUsage{Used: n, Capacity: int(m.MaxEntries())}
	}
	return out, nil
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func countEntries(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	n := 0
	it := m.Iterate()
	var value []byte
	for it.Next(&key, &value) {
		n++
	}
	return n, it.Err()
}

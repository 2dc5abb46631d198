// Package dataplane enforces compiled endpoint policies with TC eBPF
// programs on pods' host-side veths. It knows policy.Endpoint, not
// Kubernetes objects.
//
// One pair of programs (bpf/palisade.c) serves every pod: the endpoint_refs
// maps turn the veth's ifindex into the endpoint's record (slot, revision,
// per-direction isolation and policy id) in endpoint_records. Each
// direction's rules are compiled (package compile) into a CIDR table, an LPM
// trie of its own in cidr_tables (the record's policy id is its index there)
// keyed by peer address, whose longest match alone decides the address;
// directions whose entries are equal share one table. Its value
// carries the allowed ports inline when they are one or two port prefixes,
// else names a port set of port_rules, an LPM trie keyed by port set and
// port whose longest match decides protocol and port; a large set also has
// a dense copy in port_dense, one rule per port, that a packet with ports
// reads instead. A policy is replaced
// by writing the new entries under a fresh id and the new record into the
// endpoint's spare record and switching the ifindex's reference to it in one
// map update that changes only the reference's lowest byte
// (switchesInOneByte), so no reader can see a mix. The old entries are
// retired: a background goroutine waits until no program can still be
// reading through an old reference (waitForPrograms), once for everything
// retired so far, then deletes them; the old record is written again only
// after such a wait. Connection tracking
// (conntrack4 and conntrack6 LRUs, keyed by endpoint and seen from the pod)
// admits replies and related ICMP errors; entries carry the policy revision
// they were judged under and are judged again when it changes. In front of
// it all, flow_cache (bpf/lib/flowcache.h) keeps each CPU's recent verdicts
// on plain TCP and UDP frames, valid while the endpoint's revision, the
// flow's conntrack generation and flow_cache_epoch (raised by
// forgetEndpointState) stay the same.
package dataplane

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Config sizes the maps and names where they are pinned. Zero fields take
// the defaults. Sizes must match the pinned maps an earlier process left;
// Purge to change them.
type Config struct {
	PinPath       string // bpffs directory for pinned maps and links; default /sys/fs/bpf/palisade
	ConntrackSize int    // LRU entries of each address family's flows; default DefaultConntrackSize
	RuleCapacity  int    // CIDR LPM entries across all tables; default 1<<20
	// MaxTables: CIDR tables, one per distinct direction's rules plus the
	// replaced ones until they are freed; default 4 * MaxEndpoints.
	MaxTables        int
	PortRuleCapacity int // port LPM entries across all port sets; default 1<<18
	// DensePortsets: large port sets that can also have a dense copy, one
	// rule per port (768 KiB each), looked up in constant time; default 8,
	// negative for none. DensePortEntries: the port LPM entries from which
	// a set gets one, while slots last; default 64.
	DensePortsets    int
	DensePortEntries int
	MaxEndpoints     int // endpoints (pods) on the node; default 4096
	// IfindexArraySize: veths with a smaller ifindex find their endpoint
	// with an array lookup, the others through a hash; default 65536.
	IfindexArraySize int
	FragmentSize     int // LRU entries of first fragments; default 16384
	EventRingBytes   int // ring buffer size, a power of two >= page size; default 1<<20
	EventRate        int // events per second per CPU; default 1000
	EventBurst       int // default 2 * EventRate
	// FlowCacheSlots: verdicts per CPU the programs keep in front of
	// conntrack and the rules, and as many decisions of the rules per peer
	// and port; a power of two, default 256 (18 KiB and 8 KiB a CPU:
	// small enough that probing them for a new flow stays in cache, while
	// the busiest flows and peers of a CPU keep their slots).
	FlowCacheSlots int
	Timeouts       Timeouts
	// ForceTCLegacy attaches with clsact + cls_bpf even where TCX exists
	// (tests of the fallback).
	ForceTCLegacy bool
}

// Timeouts are conntrack idle timeouts.
type Timeouts struct {
	TCPSyn, TCPEstablished, TCPClosing, TCPReset, UDP, Other, Fragment time.Duration
}

// maxFlowCacheSlots bounds the per-CPU flow and rule caches (72 and 32
// bytes a slot).
const maxFlowCacheSlots = 1 << 20

// maxEndpointSlots: IPv4 conntrack keys hold the endpoint slot in 24 bits.
const maxEndpointSlots = 1 << 24

// DefaultPinPath is where Open pins when Config.PinPath is empty.
const DefaultPinPath = "/sys/fs/bpf/palisade"

// DefaultConntrackSize is Config.ConntrackSize when it is 0.
const DefaultConntrackSize = 262144

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.PinPath == "" {
		c.PinPath = DefaultPinPath
	}
	def(&c.ConntrackSize, DefaultConntrackSize)
	def(&c.RuleCapacity, 1<<20)
	def(&c.PortRuleCapacity, 1<<18)
	if c.DensePortsets == 0 {
		c.DensePortsets = 8
	}
	c.DensePortsets = max(c.DensePortsets, 0)
	def(&c.DensePortEntries, 64)
	def(&c.MaxEndpoints, 4096)
	def(&c.MaxTables, 4*c.MaxEndpoints)
	def(&c.IfindexArraySize, 65536)
	def(&c.FragmentSize, 16384)
	def(&c.EventRingBytes, 1<<20)
	def(&c.EventRate, 1000)
	def(&c.EventBurst, 2*c.EventRate)
	def(&c.FlowCacheSlots, 256)
	t := &c.Timeouts
	dur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	dur(&t.TCPSyn, time.Minute)
	dur(&t.TCPEstablished, 6*time.Hour)
	dur(&t.TCPClosing, 2*time.Minute)
	dur(&t.TCPReset, 10*time.Second)
	dur(&t.UDP, 2*time.Minute)
	dur(&t.Other, 30*time.Second)
	dur(&t.Fragment, 30*time.Second)
	return c
}

// conntrack states, as in bpf/lib/conntrack.h.
const (
	ctTCPSyn = 1 + iota
	ctTCPEstablished
	ctTCPClosing
	ctTCPReset
	ctUDP
	ctOther
)

// flowCacheHold is how long the programs may allow a flow from the flow
// cache without looking at its conntrack entry: a second, or less when a
// timeout is so short that the entry could expire meanwhile (conntrack
// stamps an active flow at most once a second).
func (t Timeouts) flowCacheHold() time.Duration {
	hold := time.Second
	for _, d := range []time.Duration{t.TCPSyn, t.TCPEstablished, t.TCPClosing, t.TCPReset, t.UDP, t.Other} {
		hold = min(hold, (d-time.Second)/4)
	}
	return max(hold, 0)
}

// byState returns the conntrack timeouts in jiffies, indexed by state.
func (t Timeouts) byState(c *jiffyClock) [8]uint64 {
	var out [8]uint64
	out[ctTCPSyn] = c.ticks(t.TCPSyn)
	out[ctTCPEstablished] = c.ticks(t.TCPEstablished)
	out[ctTCPClosing] = c.ticks(t.TCPClosing)
	out[ctTCPReset] = c.ticks(t.TCPReset)
	out[ctUDP] = c.ticks(t.UDP)
	out[ctOther] = c.ticks(t.Other)
	return out
}

// Dataplane owns the loaded programs and maps. Its methods are safe for
// concurrent use.
type Dataplane struct {
	cfg   Config
	objs  palisadeObjects
	clock *jiffyClock
	// barrier is a one-slot array of maps no program uses: updating it
	// waits for an RCU grace period (see waitForPrograms).
	barrier      *ebpf.Map
	barrierInner *ebpf.Map

	mu        sync.Mutex
	endpoints map[int]*endpointRecord
	policies  map[uint32]*policyRecord
	// policyTexts finds the live table of given entries, to share it
	policyTexts map[string]uint32
	portsets    map[string]*portsetRecord
	portsetIDs  map[uint32]*portsetRecord
	denseUsed   []bool // port_dense slots
	slotsUsed   map[uint32]bool
	nextPolicy  uint32   // table ids below it were used; 0 is none
	freeTables  []uint32 // freed table ids below nextPolicy
	tableSpec   *ebpf.MapSpec
	nextSet     uint32
	revision    uint32
	cidrUsed    int
	portUsed    int
	retired     retired
	grace       graceEpochs

	freerWake chan struct{} // retire signals the freeing goroutine
	freerStop chan struct{}
	freerDone chan struct{}
	stopOnce  sync.Once
	closed    bool
}

// Open loads the programs and maps, or adopts the maps pinned at
// cfg.PinPath by an earlier process, and moves every pinned attachment to
// the freshly loaded programs without a moment unenforced.
func Open(cfg Config) (*Dataplane, error) {
	cfg = cfg.withDefaults()
	if endpointSlots(cfg.MaxEndpoints) >= maxEndpointSlots { // the last id is the shared closed endpoint's
		return nil, fmt.Errorf("MaxEndpoints %d exceeds the %d endpoint slots conntrack keys hold", cfg.MaxEndpoints, maxEndpointSlots)
	}
	if n := cfg.FlowCacheSlots; n&(n-1) != 0 || n > maxFlowCacheSlots {
		return nil, fmt.Errorf("FlowCacheSlots %d: want a power of two up to %d", n, maxFlowCacheSlots)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.PinPath, cidrTablesDir), 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.PinPath, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	// Earlier releases kept every endpoint's rules in one cidr_rules trie.
	if _, err := os.Stat(filepath.Join(cfg.PinPath, "cidr_rules")); err == nil {
		return nil, fmt.Errorf("maps pinned at %s are of an older layout (cidr_rules): drain the node and remove the directory: %w",
			cfg.PinPath, ebpf.ErrMapIncompatible)
	}
	spec, err := loadPalisade()
	if err != nil {
		return nil, fmt.Errorf("load object spec: %w", err)
	}
	sizes := map[string]int{
		"endpoint_refs":      cfg.IfindexArraySize,
		"endpoint_refs_hash": cfg.MaxEndpoints,
		"endpoint_records":   2 * endpointSlots(cfg.MaxEndpoints),
		"cidr_tables":        cfg.MaxTables + 1, // id 0 is none
		"port_rules":         cfg.PortRuleCapacity,
		"port_dense":         max(cfg.DensePortsets, 1) * denseSlotPorts,
		"endpoint_counters":  2 * endpointSlots(cfg.MaxEndpoints),
		"conntrack4":         cfg.ConntrackSize,
		"conntrack6":         cfg.ConntrackSize,
		"fragments":          cfg.FragmentSize,
		"events":             cfg.EventRingBytes,
		"flow_cache":         cfg.FlowCacheSlots,
		"rule_cache":         cfg.FlowCacheSlots,
	}
	for name, size := range sizes {
		spec.Maps[name].MaxEntries = uint32(size)
	}
	clock, err := sharedClock()
	if err != nil {
		return nil, err
	}
	vars := map[string]any{
		"ct_timeout_jiffies":       cfg.Timeouts.byState(clock),
		"fragment_timeout_jiffies": clock.ticks(cfg.Timeouts.Fragment),
		"jiffies_per_second":       clock.hz,
		"event_rate":               uint64(cfg.EventRate),
		"event_burst":              uint64(cfg.EventBurst),
		"flow_cache_bits":          uint32(bits.TrailingZeros(uint(cfg.FlowCacheSlots))),
		"flow_cache_jiffies":       clock.ticks(cfg.Timeouts.flowCacheHold()),
		"loads_reorder":            boolByte(loadsReorder),
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	d := &Dataplane{
		cfg:         cfg,
		clock:       clock,
		endpoints:   map[int]*endpointRecord{},
		policies:    map[uint32]*policyRecord{},
		policyTexts: map[string]uint32{},
		portsets:    map[string]*portsetRecord{},
		portsetIDs:  map[uint32]*portsetRecord{},
		denseUsed:   make([]bool, cfg.DensePortsets),
		slotsUsed:   map[uint32]bool{},
		nextPolicy:  1,
		tableSpec:   spec.Maps["cidr_tables"].InnerMap.Copy(),
		nextSet:     1,
	}
	if d.barrier, d.barrierInner, err = newBarrier(); err != nil {
		return nil, err
	}
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinPath}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		d.closeBarrier()
		return nil, fmt.Errorf("maps pinned at %s were made with other sizes (Purge to resize): %w", cfg.PinPath, err)
	}
	if err != nil {
		d.closeBarrier()
		return nil, fmt.Errorf("load programs and maps: %w", err)
	}
	if err := d.rebuild(); err != nil {
		d.closeObjects()
		return nil, fmt.Errorf("read pinned state: %w", err)
	}
	if err := d.checkTableSize(); err != nil {
		d.closeObjects()
		return nil, err
	}
	// A process that stopped between retiring an endpoint slot and freeing
	// it left the slot's flows.
	if _, err := d.forgetEndpointState(func(id uint32) bool { return !d.slotsUsed[id] }); err != nil {
		d.closeObjects()
		return nil, fmt.Errorf("forget flows of unused endpoint slots: %w", err)
	}
	// Tables ready before the first pod needs one: adding them waits for
	// a grace period.
	if len(d.freeTables) == 0 && d.nextPolicy <= uint32(cfg.MaxTables) {
		if err := d.addTables(); err != nil {
			d.closeObjects()
			return nil, err
		}
	}
	if err := d.adoptLinks(); err != nil {
		d.closeObjects()
		return nil, err
	}
	d.freerWake = make(chan struct{}, 1)
	d.freerStop = make(chan struct{})
	d.freerDone = make(chan struct{})
	go d.freeRetiredInBackground()
	return d, nil
}

func newBarrier() (outer, inner *ebpf.Map, err error) {
	innerSpec := &ebpf.MapSpec{Name: "palisade_gp_in", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	inner, err = ebpf.NewMap(innerSpec)
	if err != nil {
		return nil, nil, fmt.Errorf("create grace period barrier: %w", err)
	}
	outer, err = ebpf.NewMap(&ebpf.MapSpec{Name: "palisade_gp", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4,
		MaxEntries: 1, InnerMap: innerSpec})
	if err != nil {
		inner.Close()
		return nil, nil, fmt.Errorf("create grace period barrier: %w", err)
	}
	return outer, inner, nil
}

// waitForPrograms returns once every program run that started before the
// call has finished, so that none can still hold a value it found through
// a reference switched before the call. The programs are not sleepable and
// run under rcu_read_lock; the kernel updates an array of maps from bpf(2)
// and then calls synchronize_rcu before returning (maybe_wait_bpf_programs).
func (d *Dataplane) waitForPrograms() error {
	if err := d.barrier.Update(uint32(0), d.barrierInner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	return nil
}

func (d *Dataplane) closeBarrier() error {
	return errors.Join(d.barrier.Close(), d.barrierInner.Close())
}

func (d *Dataplane) closeObjects() error {
	return errors.Join(d.objs.Close(), d.closeBarrier())
}

// Close frees the entries earlier updates retired, then releases the
// process's handles; pinned maps and links stay and keep enforcing.
func (d *Dataplane) Close() error {
	d.stopFreeing()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return errors.Join(d.flush(), d.closeObjects())
}

// stopFreeing stops the freeing goroutine, if it runs.
func (d *Dataplane) stopFreeing() {
	if d.freerStop == nil {
		return
	}
	d.stopOnce.Do(func() {
		close(d.freerStop)
		<-d.freerDone
	})
}

// Purge detaches every pinned attachment and removes every pinned object:
// nothing is enforced afterwards. The Dataplane is closed.
func (d *Dataplane) Purge() error {
	d.stopFreeing()
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if !d.closed {
		errs = append(errs, d.flush())
	}
	ifindexes, err := d.pinnedLinkIfindexes()
	errs = append(errs, err)
	for _, ifindex := range ifindexes {
		errs = append(errs, d.detach(ifindex))
	}
	for _, m := range d.allMaps() {
		errs = append(errs, m.Unpin())
	}
	if !d.closed {
		errs = append(errs, d.closeObjects())
		d.closed = true
	}
	errs = append(errs, os.RemoveAll(d.cfg.PinPath))
	return errors.Join(errs...)
}

func (d *Dataplane) allMaps() map[string]*ebpf.Map {
	m := &d.objs.palisadeMaps
	return map[string]*ebpf.Map{
		"endpoint_refs":      m.EndpointRefs,
		"endpoint_refs_hash": m.EndpointRefsHash,
		"endpoint_records":   m.EndpointRecords,
		"cidr_tables":        m.CidrTables,
		"port_rules":         m.PortRules,
		"port_dense":         m.PortDense,
		"endpoint_counters":  m.EndpointCounters,
		"conntrack4":         m.Conntrack4,
		"conntrack6":         m.Conntrack6,
		"fragments":          m.Fragments,
		"events":             m.Events,
		"event_buckets":      m.EventBuckets,
		"ct_generations":     m.CtGenerations,
	}
}

// Programs returns the loaded programs, for BPF_PROG_TEST_RUN benchmarks:
// ingress judges traffic to a pod, egress traffic from it.
func (d *Dataplane) Programs() (ingress, egress *ebpf.Program) {
	return d.objs.TcPodIngress, d.objs.TcPodEgress
}

// loadsReorder tells whether this CPU may reorder a load with later loads,
// as every architecture Go supports may except x86 and s390x; the programs
// then fence between the reads that date a flow cache slot and conntrack.
var loadsReorder = !slices.Contains([]string{"amd64", "386", "s390x"}, runtime.GOARCH)

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

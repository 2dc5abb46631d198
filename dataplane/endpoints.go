package dataplane

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/policy"
)

// ErrCapacity is wrapped by errors of SetPolicy when a map is full.
var ErrCapacity = errors.New("dataplane capacity exhausted")

// refClosed in endpoint_refs closes an interface without a record of its
// own (REF_CLOSED in bpf/lib/common.h): endpoints that found every slot in
// use share it. Its endpoint is closedEndpoint, of an id no slot has.
const (
	refClosed        = ^uint32(0)
	closedEndpointID = maxEndpointSlots - 1
)

var closedEndpoint = palisadeEndpoint{Id: closedEndpointID, Isolated: [2]uint8{1, 1}}

// recordOf returns the endpoint that ifindex's reference, read from
// endpoint_refs, leads to, checking that it is one this package wrote for
// that ifindex. Releases before records named their ifindex left it 0.
func recordOf(records *ebpf.Map, ifindex, ref uint32) (*endpointRecord, error) {
	if ref == refClosed {
		return &endpointRecord{value: closedEndpoint}, nil
	}
	var ep palisadeEndpoint
	if err := records.Lookup(ref-1, &ep); err != nil {
		return nil, fmt.Errorf("endpoint record %d: %w", ref-1, err)
	}
	if ep.Id != (ref-1)/2 || ep.Revision == 0 || (ep.Ifindex != ifindex && ep.Ifindex != 0) {
		return nil, fmt.Errorf("endpoint record %d holds slot %d revision %d of ifindex %d: %w", ref-1, ep.Id, ep.Revision, ep.Ifindex,
			ebpf.ErrMapIncompatible)
	}
	return &endpointRecord{value: ep, record: ref - 1}, nil
}

// shared tells whether the endpoint is closed on the shared reference.
func (r *endpointRecord) shared() bool { return r.value.Id == closedEndpointID }

type endpointRecord struct {
	value palisadeEndpoint
	// index of the live record in endpoint_records: value.Id*2 or value.Id*2+1
	record uint32
	// spareMark is grace.started when the reference switched away from
	// the other record: it may be written once a later wait completed.
	spareMark uint64
}

// policyRecord is a CIDR table, shared by every endpoint direction whose
// compiled rules write the same entries (replicas of one workload): a node
// holds each table once, and its trie grows with distinct tables only.
type policyRecord struct {
	keys     []palisadeCidrKey
	portsets []uint32 // referenced port sets, one reference each
	text     string   // policyText of its entries
	refs     int      // endpoint directions using it
}

type portsetRecord struct {
	id   uint32
	text string
	keys []palisadePortKey
	refs int
}

const (
	cidrKeyBits  = 32 // the family tag before the address
	portKeyBits  = 40 // port set id and protocol before the port
	cidrAnyProto = 1
)

func cidrKeyOf(p netip.Prefix) palisadeCidrKey {
	var k palisadeCidrKey
	tag := uint32(0)
	if p.Addr().Is4() {
		tag = 1
		a := p.Addr().As4()
		copy(k.Addr[:], a[:])
	} else {
		k.Addr = p.Addr().As16()
	}
	k.Tag = networkOrder(tag)
	k.Prefixlen = uint32(cidrKeyBits + p.Bits())
	return k
}

// networkOrder converts v to and from the big-endian layout the LPM tries
// compare bit by bit.
func networkOrder(v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return binary.NativeEndian.Uint32(b[:])
}

func portKeyOf(set uint32, e compile.PortEntry) palisadePortKey {
	var k palisadePortKey
	k.Portset = networkOrder(set)
	k.Proto = uint8(e.Protocol)
	binary.BigEndian.PutUint16(k.Port[:], e.Port)
	k.Prefixlen = uint32(portKeyBits + e.Bits)
	return k
}

func portsetText(keys []palisadePortKey, rules []uint32) string {
	type entry struct {
		k    palisadePortKey
		rule uint32
	}
	entries := make([]entry, len(keys))
	for i := range keys {
		entries[i] = entry{keys[i], rules[i]}
		entries[i].k.Portset = 0
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.k.Proto, b.k.Proto), cmp.Compare(a.k.Prefixlen, b.k.Prefixlen),
			cmp.Compare(binary.BigEndian.Uint16(a.k.Port[:]), binary.BigEndian.Uint16(b.k.Port[:])))
	})
	return fmt.Sprint(entries)
}

func hashEndpoint(ep *policy.Endpoint) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%+v", *ep)
	return h.Sum64()
}

// SetPolicy programs ep for the endpoint behind the host-side veth ifindex
// and returns the revision now enforced. The replacement is atomic: the new
// rules are written beside the old ones (or a live table holding the same
// entries is shared), one update of the endpoint's reference switches to
// them, and the old ones, once no endpoint uses them, are retired: they still
// count against capacity until a background wait (one RCU grace period,
// milliseconds, shared by everything retired meanwhile) lets them be
// deleted. A replacement needs room for both at once; when a map is full
// and entries are retired, SetPolicy waits for them to be freed and tries
// again. Updating the same endpoint again before a grace period has passed
// since its previous update waits for one. On error the previous policy
// stays; an endpoint that had none is left closed (its isolated directions
// deny everything). Errors of full maps wrap ErrCapacity.
func (d *Dataplane) SetPolicy(ifindex int, ep *policy.Endpoint) (uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ifindex <= 0 {
		return 0, fmt.Errorf("set policy: invalid ifindex %d", ifindex)
	}
	old := d.endpoints[ifindex]
	if old != nil && old.shared() {
		old = nil // a slot and record of its own, if one is free now
	}
	if ep == nil {
		return d.failClosed(ifindex, old, policy.Endpoint{Ingress: policy.Direction{Isolated: true}, Egress: policy.Direction{Isolated: true}},
			errors.New("nil endpoint policy"))
	}
	hash := hashEndpoint(ep)
	if old != nil && old.value.ContentHash == hash {
		return old.value.Revision, nil
	}
	var compiled [2]*compile.Direction
	for dir := range 2 {
		direction := ep.Of(policy.Dir(dir))
		if !direction.Isolated {
			continue
		}
		c, err := compile.CompileWithin(direction, d.cfg.PortRuleCapacity)
		if errors.Is(err, compile.ErrTooLarge) {
			err = fmt.Errorf("%w: %w", ErrCapacity, err)
		}
		if err != nil {
			return d.failClosed(ifindex, old, *ep, fmt.Errorf("%v: %w", policy.Dir(dir), err))
		}
		compiled[dir] = c
	}
	slot, err := d.slotFor(old)
	if err != nil {
		return d.failClosed(ifindex, old, *ep, err)
	}
	value := palisadeEndpoint{Id: slot, ContentHash: hash}
	var written []uint32
	for dir := range 2 {
		if compiled[dir] == nil {
			continue
		}
		value.Isolated[dir] = 1
		id, err := d.writePolicy(compiled[dir])
		if err != nil {
			d.release(written)
			if old == nil {
				delete(d.slotsUsed, slot)
			}
			return d.failClosed(ifindex, old, *ep, fmt.Errorf("%v: %w", policy.Dir(dir), err))
		}
		value.Policy[dir] = id
		written = append(written, id)
	}
	if old == nil {
		if err := d.resetCounters(slot); err != nil {
			d.release(written)
			delete(d.slotsUsed, slot)
			return d.failClosed(ifindex, nil, *ep, err)
		}
	}
	d.revision++
	value.Revision = d.revision
	rec, err := d.publish(ifindex, old, value)
	if err != nil {
		d.release(written)
		if old == nil {
			delete(d.slotsUsed, slot)
		}
		return d.failClosed(ifindex, old, *ep, err)
	}
	d.endpoints[ifindex] = rec
	if old != nil {
		d.release(old.value.Policy[:])
	}
	return value.Revision, nil
}

// failClosed keeps a previous policy, or else installs deny-all for the
// directions ep isolates, and returns err.
func (d *Dataplane) failClosed(ifindex int, old *endpointRecord, ep policy.Endpoint, err error) (uint32, error) {
	err = fmt.Errorf("set policy of ifindex %d: %w", ifindex, err)
	if old != nil {
		return old.value.Revision, fmt.Errorf("%w (previous policy kept)", err)
	}
	slot, slotErr := d.slotFor(nil)
	if slotErr == nil {
		if slotErr = d.resetCounters(slot); slotErr != nil {
			delete(d.slotsUsed, slot)
		}
	}
	if slotErr != nil {
		if rerr := d.setEndpointRef(ifindex, refClosed); rerr != nil {
			return 0, errors.Join(err, slotErr, fmt.Errorf("could not close endpoint: %w", rerr))
		}
		d.endpoints[ifindex] = &endpointRecord{value: closedEndpoint}
		return 0, fmt.Errorf("%w (endpoint left closed on the shared closed record: %v)", err, slotErr)
	}
	d.revision++
	value := palisadeEndpoint{Id: slot, Revision: d.revision}
	for dir := range 2 {
		if ep.Of(policy.Dir(dir)).Isolated {
			value.Isolated[dir] = 1
		}
	}
	rec, perr := d.publish(ifindex, nil, value)
	if perr != nil {
		delete(d.slotsUsed, slot)
		return 0, errors.Join(err, fmt.Errorf("could not close endpoint: %w", perr))
	}
	d.endpoints[ifindex] = rec
	return value.Revision, fmt.Errorf("%w (endpoint left closed)", err)
}

// publish writes value into the endpoint's record not in use and points
// ifindex at it. The spare record was in use before the previous switch, so
// programs that found it then must have finished first. A new endpoint's
// slot was freed only after such a wait.
func (d *Dataplane) publish(ifindex int, old *endpointRecord, value palisadeEndpoint) (*endpointRecord, error) {
	index := value.Id * 2
	if old != nil && old.record == index {
		index++
	}
	if old != nil && !d.grace.covers(old.spareMark) {
		if err := d.waitHoldingLock(); err != nil {
			return nil, err
		}
	}
	value.Ifindex = uint32(ifindex)
	if err := d.objs.EndpointRecords.Update(index, &value, ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("endpoint records map: %w", err)
	}
	if err := d.setEndpointRef(ifindex, index+1); err != nil {
		return nil, err
	}
	return &endpointRecord{value: value, record: index, spareMark: d.grace.started}, nil
}

// setEndpointRef points ifindex at record ref-1, or at none when ref is 0.
func (d *Dataplane) setEndpointRef(ifindex int, ref uint32) error {
	key := uint32(ifindex)
	if key < d.objs.EndpointRefs.MaxEntries() {
		if err := d.objs.EndpointRefs.Update(key, ref, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("endpoint references map: %w", err)
		}
		return nil
	}
	if ref == 0 {
		if err := d.objs.EndpointRefsHash.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("endpoint references hash: %w", err)
		}
		return nil
	}
	if err := d.objs.EndpointRefsHash.Update(key, ref, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("%w: endpoint references hash: %v", ErrCapacity, err)
	}
	return nil
}

// Endpoint slot s owns records 2s and 2s+1, referenced as 2s+1 and 2s+2.
// The kernel copies a value written from user space into an array map with
// no promise that a concurrent reader sees it whole, so a slot whose two
// references differ beyond their lowest byte (s%128 == 127: 255 and 256) is
// never handed out: a program that reads a reference being switched then
// sees either the old or the new one, never a mix, which would lead to a
// record not written for the veth and close it for that packet.
func switchesInOneByte(slot uint32) bool { return slot%128 != 127 }

// endpointSlots is the number of slots that holds maxEndpoints usable ones.
func endpointSlots(maxEndpoints int) int { return maxEndpoints + maxEndpoints/127 + 1 }

func (d *Dataplane) slotFor(old *endpointRecord) (uint32, error) {
	if old != nil {
		return old.value.Id, nil
	}
	for attempt := 0; attempt < 2; attempt++ {
		for slot, usable := uint32(0), 0; usable < d.cfg.MaxEndpoints; slot++ {
			if !switchesInOneByte(slot) {
				continue
			}
			usable++
			if !d.slotsUsed[slot] {
				d.slotsUsed[slot] = true
				return slot, nil
			}
		}
		if attempt > 0 || len(d.retired.slots) == 0 {
			break
		}
		if err := d.flush(); err != nil {
			return 0, fmt.Errorf("%w: all %d endpoint slots in use, freeing retired ones failed: %v", ErrCapacity, d.cfg.MaxEndpoints, err)
		}
	}
	return 0, fmt.Errorf("%w: all %d endpoint slots in use", ErrCapacity, d.cfg.MaxEndpoints)
}

func (d *Dataplane) resetCounters(slot uint32) error {
	zero := make([]palisadeCounters, ebpf.MustPossibleCPU())
	for dir := range uint32(2) {
		if err := d.objs.EndpointCounters.Update(slot*2+dir, zero, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("reset counters: %w", err)
		}
	}
	return nil
}

// writePolicy returns the policy id of the tables of c, with one more
// reference: a live table with the same entries, or else one written under
// a fresh id.
func (d *Dataplane) writePolicy(c *compile.Direction) (uint32, error) {
	rec := &policyRecord{}
	// Port sets small enough live inside the CIDR values; the others are
	// shared entries of port_rules.
	setIDs := make([]uint32, len(c.Portsets))
	for i := range c.Portsets {
		if len(c.Portsets[i].Entries) <= len(palisadeCidrValue{}.InlinePorts) {
			continue
		}
		set, err := d.internPortset(&c.Portsets[i])
		if err != nil {
			d.releasePortsets(rec)
			return 0, err
		}
		setIDs[i] = set.id
		rec.portsets = append(rec.portsets, set.id)
	}
	keys := make([]palisadeCidrKey, len(c.CIDRs))
	values := make([]palisadeCidrValue, len(c.CIDRs))
	for i, e := range c.CIDRs {
		keys[i] = cidrKeyOf(e.Prefix)
		v := &values[i]
		if e.Portset >= 0 {
			v.Portset = setIDs[e.Portset]
			if v.Portset == 0 {
				for j, pe := range c.Portsets[e.Portset].Entries {
					v.InlinePorts[j] = palisadeInlinePort{Rule: pe.Rule, Port: pe.Port, Proto: uint8(pe.Protocol), Bits: uint8(pe.Bits)}
					v.InlineCount++
				}
			}
		}
		if e.AnyProtocol {
			v.Flags |= cidrAnyProto
			v.AnyRule = e.AnyRule
		}
	}
	rec.text = policyText(keys, values)
	if id, ok := d.policyTexts[rec.text]; ok {
		d.releasePortsets(rec)
		d.policies[id].refs++
		return id, nil
	}
	if len(c.CIDRs) > d.cfg.RuleCapacity-d.cidrUsed {
		d.flushForRoom()
	}
	if free := d.cfg.RuleCapacity - d.cidrUsed; len(c.CIDRs) > free {
		d.releasePortsets(rec)
		return 0, fmt.Errorf("%w: %d CIDR entries needed, %d of %d free", ErrCapacity, len(c.CIDRs), free, d.cfg.RuleCapacity)
	}
	if len(d.freeTables) == 0 && d.nextPolicy > uint32(d.cfg.MaxTables) {
		d.flushForRoom()
	}
	id, err := d.newTable(keys, values)
	if err != nil {
		d.releasePortsets(rec)
		return 0, err
	}
	rec.keys = keys
	rec.refs = 1
	d.policies[id] = rec
	d.policyTexts[rec.text] = id
	d.cidrUsed += len(keys)
	return id, nil
}

// newTable writes the entries into a free table and returns its id.
//
// Tries stay in cidr_tables once put there, empty while free: the kernel
// waits for an RCU grace period on every update of an array of maps, so
// tables are added in batches (one wait each), and a retired table is
// emptied entry by entry rather than removed.
func (d *Dataplane) newTable(keys []palisadeCidrKey, values []palisadeCidrValue) (uint32, error) {
	if len(d.freeTables) == 0 {
		if err := d.addTables(); err != nil {
			return 0, err
		}
	}
	id := d.freeTables[len(d.freeTables)-1]
	table, err := d.openTable(id)
	if err != nil {
		return 0, err
	}
	defer table.Close()
	for i := range keys {
		if err := table.Update(&keys[i], &values[i], ebpf.UpdateAny); err != nil {
			d.emptyTable(table, keys[:i])
			return 0, fmt.Errorf("%w: CIDR table: %v", ErrCapacity, err)
		}
	}
	d.freeTables = d.freeTables[:len(d.freeTables)-1]
	return id, nil
}

// tablesPerBatch is how many empty tables addTables puts into cidr_tables
// at once.
const tablesPerBatch = 64

// addTables puts a batch of empty tries into cidr_tables after the ids in
// use, up to MaxTables.
func (d *Dataplane) addTables() error {
	first := d.nextPolicy
	n := min(tablesPerBatch, int(uint32(d.cfg.MaxTables)+1-first))
	if n <= 0 {
		return fmt.Errorf("%w: all %d CIDR tables in use", ErrCapacity, d.cfg.MaxTables)
	}
	spec := d.tableSpec.Copy()
	spec.MaxEntries = uint32(d.cfg.RuleCapacity) // a limit: tries allocate per entry
	ids := make([]uint32, n)
	fds := make([]uint32, n)
	unpin := func() {
		for _, id := range ids {
			os.Remove(cidrTablePin(d.cfg.PinPath, id))
		}
	}
	for i := range n {
		ids[i] = first + uint32(i)
		table, err := ebpf.NewMap(spec)
		if err == nil {
			// a pin left by a process stopped before cidr_tables held it
			os.Remove(cidrTablePin(d.cfg.PinPath, ids[i]))
			err = table.Pin(cidrTablePin(d.cfg.PinPath, ids[i]))
		}
		if err != nil {
			unpin()
			return fmt.Errorf("%w: create CIDR table: %v", ErrCapacity, err)
		}
		defer table.Close() // cidr_tables and the pin hold it from here
		fds[i] = uint32(table.FD())
	}
	if _, err := d.objs.CidrTables.BatchUpdate(ids, fds, nil); err != nil {
		unpin()
		return fmt.Errorf("put CIDR tables %d-%d: %w", first, first+uint32(n)-1, err)
	}
	d.nextPolicy += uint32(n)
	for i := n - 1; i >= 0; i-- {
		d.freeTables = append(d.freeTables, ids[i])
	}
	return nil
}

// checkTableSize refuses pinned CIDR tables made with another
// RuleCapacity: each trie holds at most that many entries.
func (d *Dataplane) checkTableSize() error {
	if d.nextPolicy <= 1 {
		return nil
	}
	table, err := d.openTable(1)
	if err != nil {
		return err
	}
	defer table.Close()
	if got := table.MaxEntries(); got != uint32(d.cfg.RuleCapacity) {
		return fmt.Errorf("CIDR tables pinned at %s hold %d entries, RuleCapacity is %d (Purge to resize): %w",
			d.cfg.PinPath, got, d.cfg.RuleCapacity, ebpf.ErrMapIncompatible)
	}
	return nil
}

func (d *Dataplane) openTable(id uint32) (*ebpf.Map, error) {
	return openCIDRTable(d.cfg.PinPath, d.objs.CidrTables, id, false)
}

// emptyTable deletes keys from table and reports whether it is empty.
func (d *Dataplane) emptyTable(table *ebpf.Map, keys []palisadeCidrKey) bool {
	empty := true
	for i := range keys {
		if err := table.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			empty = false
		}
	}
	return empty
}

// policyText identifies a table by its entries, whatever their order: the
// SHA-256 of the sorted entries.
func policyText(keys []palisadeCidrKey, values []palisadeCidrValue) string {
	le := binary.LittleEndian
	entries := make([][]byte, len(keys))
	for i := range keys {
		k, v := &keys[i], &values[i]
		e := make([]byte, 0, 64)
		e = le.AppendUint32(e, k.Prefixlen)
		e = le.AppendUint32(e, k.Tag)
		e = append(e, k.Addr[:]...)
		for _, n := range []uint32{v.Portset, v.AnyRule, v.Flags, v.InlineCount} {
			e = le.AppendUint32(e, n)
		}
		for _, p := range v.InlinePorts {
			e = le.AppendUint32(e, p.Rule)
			e = le.AppendUint16(e, p.Port)
			e = append(e, p.Proto, p.Bits)
		}
		entries[i] = e
	}
	slices.SortFunc(entries, bytes.Compare)
	h := sha256.New()
	for _, e := range entries {
		h.Write(e)
	}
	return string(h.Sum(nil))
}

// release drops one reference to each policy id; a table no endpoint uses
// any more is retired and is no longer shared.
func (d *Dataplane) release(ids []uint32) {
	for _, id := range ids {
		rec := d.policies[id]
		if id == 0 || rec == nil {
			continue
		}
		rec.refs--
		if rec.refs > 0 {
			continue
		}
		if d.policyTexts[rec.text] == id {
			delete(d.policyTexts, rec.text)
		}
		d.retire([]uint32{id}, nil)
	}
}

func (d *Dataplane) internPortset(s *compile.Portset) (*portsetRecord, error) {
	keys := make([]palisadePortKey, len(s.Entries))
	rules := make([]uint32, len(s.Entries))
	for i, e := range s.Entries {
		keys[i] = portKeyOf(0, e)
		rules[i] = e.Rule
	}
	text := portsetText(keys, rules)
	if set := d.portsets[text]; set != nil {
		set.refs++
		return set, nil
	}
	if len(keys) > d.cfg.PortRuleCapacity-d.portUsed {
		d.flushForRoom()
	}
	if free := d.cfg.PortRuleCapacity - d.portUsed; len(keys) > free {
		return nil, fmt.Errorf("%w: %d port entries needed, %d of %d free", ErrCapacity, len(keys), free, d.cfg.PortRuleCapacity)
	}
	set := &portsetRecord{text: text, refs: 1}
	if slot := slices.Index(d.denseUsed, false); slot >= 0 && len(keys) >= d.cfg.DensePortEntries {
		if tables, ok := denseTables(s.Entries); ok {
			if err := d.writeDense(slot, tables); err != nil {
				return nil, err
			}
			set.id = portsetDense | uint32(slot)
			d.denseUsed[slot] = true
		}
	}
	if set.id == 0 {
		if d.nextSet >= portsetDense {
			return nil, fmt.Errorf("%w: port set ids", ErrCapacity)
		}
		set.id = d.nextSet
		d.nextSet++
	}
	for i := range keys {
		key := portKeyOf(set.id, s.Entries[i])
		if err := d.objs.PortRules.Update(&key, &rules[i], ebpf.UpdateAny); err != nil {
			set.refs = 0
			d.dropPortset(set)
			return nil, fmt.Errorf("%w: port rules map: %v", ErrCapacity, err)
		}
		set.keys = append(set.keys, key)
		d.portUsed++
	}
	d.portsets[text] = set
	d.portsetIDs[set.id] = set
	return set, nil
}

// portsetDense marks the id of a port set with a dense copy in port_dense;
// the low bits are its slot there.
const portsetDense = 1 << 31

// denseSlotPorts is the size of one port_dense slot: TCP, UDP and SCTP
// tables of every port.
const denseSlotPorts = 3 * 65536

func denseSlot(id uint32) (int, bool) {
	return int(id &^ portsetDense), id&portsetDense != 0
}

// denseTables lays out a port set as port_dense holds it: per protocol and
// port, the rule of the longest matching entry + 1, 0 where none matches.
// Not possible when a rule id has no + 1.
func denseTables(entries []compile.PortEntry) ([]uint32, bool) {
	byBits := slices.SortedStableFunc(slices.Values(entries), func(a, b compile.PortEntry) int { return cmp.Compare(a.Bits, b.Bits) })
	tables := make([]uint32, denseSlotPorts)
	for _, e := range byBits {
		var table int
		switch e.Protocol {
		case policy.TCP:
			table = 0
		case policy.UDP:
			table = 1
		case policy.SCTP:
			table = 2
		default:
			continue
		}
		if e.Rule == math.MaxUint32 || e.Bits > 16 {
			return nil, false
		}
		span := 1 << (16 - e.Bits)
		first := int(e.Port) &^ (span - 1)
		for port := first; port < first+span; port++ {
			tables[table*65536+port] = e.Rule + 1
		}
	}
	return tables, true
}

// writeDense fills a free slot of port_dense, all of it: an earlier set may
// have left values there.
func (d *Dataplane) writeDense(slot int, tables []uint32) error {
	keys := make([]uint32, len(tables))
	for i := range keys {
		keys[i] = uint32(slot*denseSlotPorts + i)
	}
	if _, err := d.objs.PortDense.BatchUpdate(keys, tables, nil); err != nil {
		return fmt.Errorf("write dense port set: %w", err)
	}
	return nil
}

func (d *Dataplane) dropPortset(set *portsetRecord) {
	for i := range set.keys {
		if err := d.objs.PortRules.Delete(&set.keys[i]); err == nil {
			d.portUsed--
		}
	}
	if slot, ok := denseSlot(set.id); ok && slot < len(d.denseUsed) {
		d.denseUsed[slot] = false
	}
	delete(d.portsets, set.text)
	delete(d.portsetIDs, set.id)
}

func (d *Dataplane) deletePolicy(id uint32) {
	rec := d.policies[id]
	if rec == nil {
		return
	}
	// A table whose entries could not all be deleted is not used again.
	if table, err := d.openTable(id); err == nil {
		if d.emptyTable(table, rec.keys) {
			d.freeTables = append(d.freeTables, id)
		}
		table.Close()
	}
	d.cidrUsed -= len(rec.keys)
	d.releasePortsets(rec)
	if d.policyTexts[rec.text] == id {
		delete(d.policyTexts, rec.text)
	}
	delete(d.policies, id)
}

// releasePortsets drops rec's references to its port sets.
func (d *Dataplane) releasePortsets(rec *policyRecord) {
	for _, setID := range rec.portsets {
		if set := d.portsetIDs[setID]; set != nil {
			set.refs--
			if set.refs <= 0 {
				d.dropPortset(set)
			}
		}
	}
	rec.portsets = nil
}

// RemovePolicy stops policing the endpoint: all its traffic passes. Its
// tracked flows are forgotten.
func (d *Dataplane) RemovePolicy(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.endpoints[ifindex]
	if old == nil {
		return nil
	}
	if err := d.setEndpointRef(ifindex, 0); err != nil {
		return fmt.Errorf("remove policy of ifindex %d: %w", ifindex, err)
	}
	delete(d.endpoints, ifindex)
	if old.shared() {
		return nil
	}
	d.release(old.value.Policy[:])
	d.retire(nil, []uint32{old.value.Id})
	return nil
}

// retired is what switched references no longer point to but programs
// that started before the switch may still read. It stays allocated (and
// counted) until a wait that began after its retirement has completed.
type retired struct {
	policies []retiredItem
	slots    []retiredItem
}

// retiredItem is a policy id or endpoint slot, with grace.started when it
// was retired.
type retiredItem struct {
	id   uint32
	mark uint64
}

// graceEpochs numbers the waits for running programs: started counts the
// waits begun, completed is the highest number of one that finished.
type graceEpochs struct {
	started, completed uint64
}

// covers reports whether a wait numbered above mark has finished, so that
// every program running when grace.started was mark is done.
func (g graceEpochs) covers(mark uint64) bool { return g.completed > mark }

func (d *Dataplane) retire(policies, slots []uint32) {
	for _, id := range policies {
		if id != 0 {
			d.retired.policies = append(d.retired.policies, retiredItem{id, d.grace.started})
		}
	}
	for _, slot := range slots {
		d.retired.slots = append(d.retired.slots, retiredItem{slot, d.grace.started})
	}
	select {
	case d.freerWake <- struct{}{}:
	default:
	}
}

func (d *Dataplane) hasRetired() bool {
	return len(d.retired.policies)+len(d.retired.slots) > 0
}

// waitHoldingLock waits for running programs while holding d.mu; for the
// rare paths that cannot proceed without it.
func (d *Dataplane) waitHoldingLock() error {
	d.grace.started++
	mark := d.grace.started
	if err := d.waitForPrograms(); err != nil {
		return err
	}
	d.grace.completed = max(d.grace.completed, mark)
	return nil
}

// flush waits once and frees everything retired.
func (d *Dataplane) flush() error {
	if err := d.waitHoldingLock(); err != nil {
		return err
	}
	return d.freeCovered()
}

// flushForRoom frees retired entries when there are any, before a
// capacity check; a failure leaves the check to report the full map.
func (d *Dataplane) flushForRoom() {
	if d.hasRetired() {
		_ = d.flush()
	}
}

// freeCovered frees the retired items a completed wait covers: their CIDR
// and port entries, and their endpoint slots with the flows tracked under
// them.
func (d *Dataplane) freeCovered() error {
	keep := d.retired.policies[:0]
	for _, p := range d.retired.policies {
		if d.grace.covers(p.mark) {
			d.deletePolicy(p.id)
		} else {
			keep = append(keep, p)
		}
	}
	d.retired.policies = keep
	slots := map[uint32]bool{}
	var later []retiredItem
	for _, s := range d.retired.slots {
		if d.grace.covers(s.mark) {
			slots[s.id] = true
		} else {
			later = append(later, s)
		}
	}
	if len(slots) == 0 {
		return nil
	}
	if _, err := d.forgetEndpointState(func(id uint32) bool { return slots[id] }); err != nil {
		return fmt.Errorf("forget flows of freed endpoint slots: %w", err)
	}
	if err := d.unnameRecords(slices.Collect(maps.Keys(slots))); err != nil {
		return err
	}
	for slot := range slots {
		delete(d.slotsUsed, slot)
	}
	d.retired.slots = later
	return nil
}

// unnameRecords clears the ifindex the records of free slots name, so that
// a reference read while being written never leads to a record of a policy
// its veth no longer has. The revisions stay, for readRecords.
func (d *Dataplane) unnameRecords(slots []uint32) error {
	for _, slot := range slots {
		for _, index := range []uint32{2 * slot, 2*slot + 1} {
			var ep palisadeEndpoint
			if err := d.objs.EndpointRecords.Lookup(index, &ep); err != nil {
				return fmt.Errorf("endpoint record %d: %w", index, err)
			}
			if ep.Ifindex == 0 {
				continue
			}
			ep.Ifindex = 0
			if err := d.objs.EndpointRecords.Update(index, &ep, ebpf.UpdateExist); err != nil {
				return fmt.Errorf("endpoint record %d: %w", index, err)
			}
		}
	}
	return nil
}

// retryFreeingAfter paces the freeing goroutine after a failed wait or free.
const retryFreeingAfter = 100 * time.Millisecond

// freeRetiredInBackground frees retired items until Close or Purge: one
// wait serves everything retired before it began.
func (d *Dataplane) freeRetiredInBackground() {
	defer close(d.freerDone)
	for {
		select {
		case <-d.freerStop:
			return
		case <-d.freerWake:
		}
		for {
			more, err := d.freeRetiredOnce()
			if !more {
				break
			}
			if err != nil {
				select {
				case <-d.freerStop:
					return
				case <-time.After(retryFreeingAfter):
				}
				continue
			}
			select {
			case <-d.freerStop:
				return
			default:
			}
		}
	}
}

// freeRetiredOnce waits, without holding d.mu, for the programs that may
// read what is retired now, frees it, and reports whether more is retired.
func (d *Dataplane) freeRetiredOnce() (more bool, err error) {
	d.mu.Lock()
	if !d.hasRetired() {
		d.mu.Unlock()
		return false, nil
	}
	d.grace.started++
	mark := d.grace.started
	d.mu.Unlock()
	waitErr := d.waitForPrograms()
	d.mu.Lock()
	defer d.mu.Unlock()
	if waitErr == nil {
		d.grace.completed = max(d.grace.completed, mark)
	}
	freeErr := d.freeCovered()
	return d.hasRetired(), errors.Join(waitErr, freeErr)
}

// EndpointState describes one programmed endpoint.
type EndpointState struct {
	Ifindex    int
	EndpointID uint32
	Revision   uint32
	Attached   bool
	// Isolated per direction (policy.Ingress, policy.Egress).
	Isolated [2]bool
	// RuleEntries counts the CIDR entries of both directions.
	RuleEntries int
}

// Endpoints lists the programmed endpoints, sorted by ifindex.
func (d *Dataplane) Endpoints() ([]EndpointState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	attached, err := d.pinnedLinkIfindexes()
	if err != nil {
		return nil, err
	}
	out := make([]EndpointState, 0, len(d.endpoints))
	for ifindex, rec := range d.endpoints {
		s := EndpointState{
			Ifindex:    ifindex,
			EndpointID: rec.value.Id,
			Revision:   rec.value.Revision,
			Attached:   slices.Contains(attached, ifindex),
			Isolated:   [2]bool{rec.value.Isolated[0] != 0, rec.value.Isolated[1] != 0},
		}
		for _, id := range rec.value.Policy {
			if p := d.policies[id]; p != nil {
				s.RuleEntries += len(p.keys)
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b EndpointState) int { return cmp.Compare(a.Ifindex, b.Ifindex) })
	return out, nil
}

// endpointRef reads the record reference of ifindex, 0 for none.
func (d *Dataplane) endpointRef(ifindex uint32) (uint32, error) {
	var ref uint32
	m := d.objs.EndpointRefs
	if ifindex >= m.MaxEntries() {
		m = d.objs.EndpointRefsHash
	}
	if err := m.Lookup(ifindex, &ref); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, fmt.Errorf("endpoint reference of ifindex %d: %w", ifindex, err)
	}
	return ref, nil
}

// endpointRefs reads the record reference of every policed ifindex.
func (d *Dataplane) endpointRefs() (map[uint32]uint32, error) {
	out := map[uint32]uint32{}
	size := d.objs.EndpointRefs.MaxEntries()
	keys, values := make([]uint32, size), make([]uint32, size)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.EndpointRefs.BatchLookup(&cursor, keys, values, nil)
		for i := range n {
			if values[i] != 0 {
				out[keys[i]] = values[i]
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("endpoint references: %w", err)
		}
	}
	var ifindex, ref uint32
	it := d.objs.EndpointRefsHash.Iterate()
	for it.Next(&ifindex, &ref) {
		out[ifindex] = ref
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("endpoint references hash: %w", err)
	}
	return out, nil
}

// readRecords reads every endpoint record once the references are read:
// d.revision becomes the highest any record holds, and the records of
// slots no reference uses are unnamed (a process stopped between retiring
// a slot and freeing it left them naming their veth). A record is written
// over only with a higher revision, so no revision ever used is given
// again, even one of an endpoint since removed: caches of programs still
// attached key decisions by revision alone.
func (d *Dataplane) readRecords() error {
	size := d.objs.EndpointRecords.MaxEntries()
	indexes, records := make([]uint32, size), make([]palisadeEndpoint, size)
	var cursor ebpf.MapBatchCursor
	var named []uint32
	for {
		n, err := d.objs.EndpointRecords.BatchLookup(&cursor, indexes, records, nil)
		for i := range n {
			d.revision = max(d.revision, records[i].Revision)
			if slot := indexes[i] / 2; records[i].Ifindex != 0 && !d.slotsUsed[slot] && !slices.Contains(named, slot) {
				named = append(named, slot)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("endpoint records: %w", err)
		}
	}
	return d.unnameRecords(named)
}

// rebuild reads the bookkeeping back from the (possibly pinned) maps.
func (d *Dataplane) rebuild() error {
	refs, err := d.endpointRefs()
	if err != nil {
		return err
	}
	for ifindex, ref := range refs {
		rec, err := recordOf(d.objs.EndpointRecords, ifindex, ref)
		if err != nil {
			return fmt.Errorf("ifindex %d: %w", ifindex, err)
		}
		if !rec.shared() {
			if d.slotsUsed[rec.value.Id] {
				return fmt.Errorf("ifindex %d: endpoint slot %d referenced twice: %w", ifindex, rec.value.Id, ebpf.ErrMapIncompatible)
			}
			d.slotsUsed[rec.value.Id] = true
		}
		d.endpoints[int(ifindex)] = rec
	}
	for ifindex, rec := range d.endpoints {
		if rec.shared() || rec.value.Ifindex != 0 {
			continue
		}
		// Written by an older release, whose programs ignore the field:
		// the rewrite changes no byte they read.
		rec.value.Ifindex = uint32(ifindex)
		if err := d.objs.EndpointRecords.Update(rec.record, &rec.value, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("ifindex %d: name it in its endpoint record: %w", ifindex, err)
		}
	}
	if err := d.readRecords(); err != nil {
		return err
	}
	values := map[uint32][]palisadeCidrValue{}
	err = walkCIDRTables(d.cfg.PinPath, d.objs.CidrTables, false, func(id uint32, ck palisadeCidrKey, cv palisadeCidrValue) error {
		rec := d.policies[id]
		if rec == nil {
			rec = &policyRecord{}
			d.policies[id] = rec
		}
		rec.keys = append(rec.keys, ck)
		values[id] = append(values[id], cv)
		if cv.Portset != 0 && !slices.Contains(rec.portsets, cv.Portset) {
			rec.portsets = append(rec.portsets, cv.Portset)
		}
		d.cidrUsed++
		return nil
	}, func(id uint32) { d.nextPolicy = max(d.nextPolicy, id+1) })
	if err != nil {
		return err
	}
	// An empty table is live when an endpoint uses it (a direction that
	// allows nothing), else free.
	for _, rec := range d.endpoints {
		for _, id := range rec.value.Policy {
			if id != 0 && id < d.nextPolicy && d.policies[id] == nil {
				d.policies[id] = &policyRecord{}
			}
		}
	}
	for id := d.nextPolicy - 1; id >= 1; id-- {
		if d.policies[id] == nil {
			d.freeTables = append(d.freeTables, id)
		}
	}
	var pk palisadePortKey
	var rule uint32
	rules := map[uint32][]uint32{}
	pit := d.objs.PortRules.Iterate()
	for pit.Next(&pk, &rule) {
		id := networkOrder(pk.Portset)
		set := d.portsetIDs[id]
		if set == nil {
			set = &portsetRecord{id: id}
			d.portsetIDs[id] = set
		}
		set.keys = append(set.keys, pk)
		rules[id] = append(rules[id], rule)
		d.portUsed++
		if slot, ok := denseSlot(id); !ok {
			d.nextSet = max(d.nextSet, id+1)
		} else if slot < len(d.denseUsed) {
			d.denseUsed[slot] = true
		} else {
			return fmt.Errorf("port set %#x uses dense slot %d of %d: reopen with the same DensePortsets or purge", id, slot, len(d.denseUsed))
		}
	}
	if err := pit.Err(); err != nil {
		return fmt.Errorf("port rules: %w", err)
	}
	for id, set := range d.portsetIDs {
		set.text = portsetText(set.keys, rules[id])
		d.portsets[set.text] = set
	}
	for _, rec := range d.policies {
		for _, id := range rec.portsets {
			if set := d.portsetIDs[id]; set != nil {
				set.refs++
			}
		}
	}
	for _, rec := range d.endpoints {
		for _, id := range rec.value.Policy {
			if p := d.policies[id]; p != nil {
				p.refs++
			}
		}
	}
	for id, rec := range d.policies {
		// Tables no endpoint uses are leftovers of an interrupted update.
		if rec.refs == 0 {
			d.retire([]uint32{id}, nil)
			continue
		}
		rec.text = policyText(rec.keys, values[id])
		d.policyTexts[rec.text] = id
	}
	// Also covers the spare records the previous process switched away from.
	if err := d.flush(); err != nil {
		return err
	}
	for _, set := range d.portsetIDs {
		if set.refs == 0 {
			d.dropPortset(set)
		}
	}
	return nil
}

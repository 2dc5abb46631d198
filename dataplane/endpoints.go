package dataplane

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/policy"
)

// ErrCapacity is wrapped by errors of SetPolicy when a map is full.
var ErrCapacity = errors.New("dataplane capacity exhausted")

type endpointRecord struct {
	value palisadeEndpoint
	// index of the live record in endpoint_records: value.Id*2 or value.Id*2+1
	record uint32
}

// policyRecord is the CIDR table of one direction of one endpoint.
type policyRecord struct {
	keys     []palisadeCidrKey
	portsets []uint32 // referenced port sets, one reference each
}

type portsetRecord struct {
	id   uint32
	text string
	keys []palisadePortKey
	refs int
}

const (
	cidrKeyBits  = 32 // tag before the address
	portKeyBits  = 40 // port set id and protocol before the port
	cidrAnyProto = 1
)

func cidrKeyOf(policyID uint32, p netip.Prefix) palisadeCidrKey {
	var k palisadeCidrKey
	tag := policyID << 1
	if p.Addr().Is4() {
		tag |= 1
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
// rules are written beside the old ones, one update of the endpoint's
// reference switches to them, then, once no program can still be reading
// the old ones (a wait of one RCU grace period, milliseconds), they are
// deleted, so a replacement needs room for both at once. On error the
// previous policy stays; an endpoint that had none is left closed (its
// isolated directions deny everything). The one exception: when the wait
// itself fails after the switch, the new revision is returned with the
// error and the old entries are freed by a later call. Errors of full maps
// wrap ErrCapacity.
func (d *Dataplane) SetPolicy(ifindex int, ep *policy.Endpoint) (uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ifindex <= 0 {
		return 0, fmt.Errorf("set policy: invalid ifindex %d", ifindex)
	}
	old := d.endpoints[ifindex]
	if err := d.settle(); err != nil {
		return d.failClosed(ifindex, old, policy.Endpoint{Ingress: policy.Direction{Isolated: true}, Egress: policy.Direction{Isolated: true}}, err)
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
		c, err := compile.Compile(direction)
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
			for _, id := range written {
				d.deletePolicy(id)
			}
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
			return 0, err
		}
	}
	d.revision++
	value.Revision = d.revision
	rec, err := d.publish(ifindex, old, value)
	if err != nil {
		for _, id := range written {
			d.deletePolicy(id)
		}
		if old == nil {
			delete(d.slotsUsed, slot)
		}
		return d.failClosed(ifindex, old, *ep, err)
	}
	d.endpoints[ifindex] = rec
	if old != nil {
		d.retire(old.value.Policy[:], nil)
		if err := d.settle(); err != nil {
			return value.Revision, fmt.Errorf("set policy of ifindex %d: revision %d enforced, but the previous policy's entries are kept until a later update: %w",
				ifindex, value.Revision, err)
		}
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
	if slotErr != nil {
		return 0, errors.Join(err, slotErr)
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
// programs that found it then must have finished first.
func (d *Dataplane) publish(ifindex int, old *endpointRecord, value palisadeEndpoint) (*endpointRecord, error) {
	index := value.Id * 2
	if old != nil && old.record == index {
		index++
	}
	if old != nil {
		if err := d.settle(); err != nil {
			return nil, err
		}
	}
	if err := d.objs.EndpointRecords.Update(index, &value, ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("endpoint records map: %w", err)
	}
	if err := d.setEndpointRef(ifindex, index+1); err != nil {
		return nil, err
	}
	return &endpointRecord{value: value, record: index}, nil
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

func (d *Dataplane) slotFor(old *endpointRecord) (uint32, error) {
	if old != nil {
		return old.value.Id, nil
	}
	for slot := uint32(0); slot < uint32(d.cfg.MaxEndpoints); slot++ {
		if !d.slotsUsed[slot] {
			d.slotsUsed[slot] = true
			return slot, nil
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

// writePolicy writes the tables of c under a fresh policy id.
func (d *Dataplane) writePolicy(c *compile.Direction) (uint32, error) {
	if free := d.cfg.RuleCapacity - d.cidrUsed; len(c.CIDRs) > free {
		return 0, fmt.Errorf("%w: %d CIDR entries needed, %d of %d free", ErrCapacity, len(c.CIDRs), free, d.cfg.RuleCapacity)
	}
	id := d.nextPolicy
	if id >= 1<<31 {
		return 0, fmt.Errorf("%w: policy ids", ErrCapacity)
	}
	d.nextPolicy++
	rec := &policyRecord{}
	d.policies[id] = rec
	// Port sets small enough live inside the CIDR values; the others are
	// shared entries of port_rules.
	setIDs := make([]uint32, len(c.Portsets))
	for i := range c.Portsets {
		if len(c.Portsets[i].Entries) <= len(palisadeCidrValue{}.InlinePorts) {
			continue
		}
		set, err := d.internPortset(&c.Portsets[i])
		if err != nil {
			d.deletePolicy(id)
			return 0, err
		}
		setIDs[i] = set.id
		rec.portsets = append(rec.portsets, set.id)
	}
	for _, e := range c.CIDRs {
		key := cidrKeyOf(id, e.Prefix)
		var v palisadeCidrValue
		if e.Portset >= 0 {
			v.Portset = setIDs[e.Portset]
			if v.Portset == 0 {
				for i, pe := range c.Portsets[e.Portset].Entries {
					v.InlinePorts[i] = palisadeInlinePort{Rule: pe.Rule, Port: pe.Port, Proto: uint8(pe.Protocol), Bits: uint8(pe.Bits)}
					v.InlineCount++
				}
			}
		}
		if e.AnyProtocol {
			v.Flags |= cidrAnyProto
			v.AnyRule = e.AnyRule
		}
		if err := d.objs.CidrRules.Update(&key, &v, ebpf.UpdateAny); err != nil {
			d.deletePolicy(id)
			return 0, fmt.Errorf("%w: CIDR rules map: %v", ErrCapacity, err)
		}
		rec.keys = append(rec.keys, key)
		d.cidrUsed++
	}
	return id, nil
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
	if free := d.cfg.PortRuleCapacity - d.portUsed; len(keys) > free {
		return nil, fmt.Errorf("%w: %d port entries needed, %d of %d free", ErrCapacity, len(keys), free, d.cfg.PortRuleCapacity)
	}
	set := &portsetRecord{id: d.nextSet, text: text, refs: 1}
	d.nextSet++
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

func (d *Dataplane) dropPortset(set *portsetRecord) {
	for i := range set.keys {
		if err := d.objs.PortRules.Delete(&set.keys[i]); err == nil {
			d.portUsed--
		}
	}
	delete(d.portsets, set.text)
	delete(d.portsetIDs, set.id)
}

func (d *Dataplane) deletePolicy(id uint32) {
	rec := d.policies[id]
	if rec == nil {
		return
	}
	for i := range rec.keys {
		if err := d.objs.CidrRules.Delete(&rec.keys[i]); err == nil {
			d.cidrUsed--
		}
	}
	for _, setID := range rec.portsets {
		if set := d.portsetIDs[setID]; set != nil {
			set.refs--
			if set.refs <= 0 {
				d.dropPortset(set)
			}
		}
	}
	delete(d.policies, id)
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
	d.retire(old.value.Policy[:], []uint32{old.value.Id})
	if err := d.settle(); err != nil {
		return fmt.Errorf("remove policy of ifindex %d: removed, but its entries are kept until a later update: %w", ifindex, err)
	}
	return nil
}

// retired is what switched references no longer point to but programs
// that started before the switch may still read.
type retired struct {
	pending  bool // a reference switched since the last wait: spare records are in this state too
	policies []uint32
	slots    []uint32
}

func (d *Dataplane) retire(policies, slots []uint32) {
	d.retired.pending = true
	d.retired.policies = append(d.retired.policies, policies...)
	d.retired.slots = append(d.retired.slots, slots...)
}

// settle waits for the programs that may still read retired entries, then
// frees them: their CIDR and port entries, and their endpoint slots with
// the flows tracked under them.
func (d *Dataplane) settle() error {
	if !d.retired.pending {
		return nil
	}
	if err := d.waitForPrograms(); err != nil {
		return err
	}
	for _, id := range d.retired.policies {
		d.deletePolicy(id)
	}
	d.retired.policies, d.retired.pending = nil, false
	if len(d.retired.slots) == 0 {
		return nil
	}
	slots := map[uint32]bool{}
	for _, slot := range d.retired.slots {
		slots[slot] = true
	}
	if _, err := d.forgetEndpointState(slots); err != nil {
		d.retired.pending = true
		return err
	}
	for slot := range slots {
		delete(d.slotsUsed, slot)
	}
	d.retired.slots = nil
	return nil
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

// rebuild reads the bookkeeping back from the (possibly pinned) maps.
func (d *Dataplane) rebuild() error {
	refs, err := d.endpointRefs()
	if err != nil {
		return err
	}
	for ifindex, ref := range refs {
		var ep palisadeEndpoint
		if err := d.objs.EndpointRecords.Lookup(ref-1, &ep); err != nil {
			return fmt.Errorf("endpoint record %d of ifindex %d: %w", ref-1, ifindex, err)
		}
		d.endpoints[int(ifindex)] = &endpointRecord{value: ep, record: ref - 1}
		d.slotsUsed[ep.Id] = true
		d.revision = max(d.revision, ep.Revision)
	}
	var ck palisadeCidrKey
	var cv palisadeCidrValue
	cit := d.objs.CidrRules.Iterate()
	for cit.Next(&ck, &cv) {
		id := networkOrder(ck.Tag) >> 1
		rec := d.policies[id]
		if rec == nil {
			rec = &policyRecord{}
			d.policies[id] = rec
		}
		rec.keys = append(rec.keys, ck)
		if cv.Portset != 0 && !slices.Contains(rec.portsets, cv.Portset) {
			rec.portsets = append(rec.portsets, cv.Portset)
		}
		d.cidrUsed++
		d.nextPolicy = max(d.nextPolicy, id+1)
	}
	if err := cit.Err(); err != nil {
		return fmt.Errorf("CIDR rules: %w", err)
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
		d.nextSet = max(d.nextSet, id+1)
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
	// Tables no endpoint uses are leftovers of an interrupted update.
	inUse := map[uint32]bool{}
	for _, rec := range d.endpoints {
		inUse[rec.value.Policy[0]], inUse[rec.value.Policy[1]] = true, true
	}
	for id := range d.policies {
		if !inUse[id] {
			d.retire([]uint32{id}, nil)
		}
	}
	if err := d.settle(); err != nil {
		return err
	}
	for _, set := range d.portsetIDs {
		if set.refs == 0 {
			d.dropPortset(set)
		}
	}
	return nil
}

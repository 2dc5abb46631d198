package dataplane

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/policy"
)

// Inspection reads the state a dataplane pinned, read-only: it loads no
// program and touches no attachment, so it is safe beside a running agent.
// The endpoints are those programmed when Inspect ran; counters and tables
// are read when asked for.
type Inspection struct {
	// pinned is a Dataplane holding only the pinned maps, opened read-only,
	// and the endpoint records read from them, so that its own readers
	// (Counters, Endpoints) serve the inspection.
	pinned *Dataplane
}

// Inspect opens the maps pinned at pinPath read-only.
func Inspect(pinPath string) (*Inspection, error) {
	d := &Dataplane{
		cfg:        Config{PinPath: pinPath},
		endpoints:  map[int]*endpointRecord{},
		policies:   map[uint32]*policyRecord{},
		portsets:   map[string]*portsetRecord{},
		portsetIDs: map[uint32]*portsetRecord{},
		slotsUsed:  map[uint32]bool{},
	}
	maps := &d.objs.palisadeMaps
	for name, dst := range map[string]**ebpf.Map{
		palisadeMapEndpointRefs:     &maps.EndpointRefs,
		palisadeMapEndpointRefsHash: &maps.EndpointRefsHash,
		palisadeMapEndpointRecords:  &maps.EndpointRecords,
		palisadeMapEndpointCounters: &maps.EndpointCounters,
		palisadeMapCidrTables:       &maps.CidrTables,
		palisadeMapPortRules:        &maps.PortRules,
	} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			maps.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("no dataplane state at %s (is the agent running with --pin-path %s?): %w", pinPath, pinPath, err)
			}
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		*dst = m
	}
	refs, err := d.endpointRefs()
	if err != nil {
		maps.Close()
		return nil, fmt.Errorf("inspect %s: %w", pinPath, err)
	}
	for ifindex, ref := range refs {
		if ref == 0 {
			continue
		}
		rec, err := recordOf(maps.EndpointRecords, ifindex, ref)
		// The agent may have moved the endpoint since its reference was
		// read: what counts is its reference now.
		for attempt := 0; err != nil && attempt < 3; attempt++ {
			now, rerr := d.endpointRef(ifindex)
			if rerr != nil || now == ref {
				break
			}
			if ref = now; ref == 0 {
				rec, err = nil, nil
				break
			}
			rec, err = recordOf(maps.EndpointRecords, ifindex, ref)
		}
		if err != nil {
			maps.Close()
			return nil, fmt.Errorf("inspect %s: ifindex %d: %w", pinPath, ifindex, err)
		}
		if rec != nil {
			d.endpoints[int(ifindex)] = rec
		}
	}
	return &Inspection{pinned: d}, nil
}

// Close releases the maps; the pinned state stays.
func (i *Inspection) Close() error {
	return i.pinned.objs.palisadeMaps.Close()
}

// Endpoints lists the programmed endpoints, sorted by ifindex.
func (i *Inspection) Endpoints() ([]EndpointState, error) {
	if err := i.readPolicyKeys(); err != nil {
		return nil, err
	}
	return i.pinned.Endpoints()
}

// readPolicyKeys notes the CIDR keys of each policy, which
// EndpointState.RuleEntries counts.
func (i *Inspection) readPolicyKeys() error {
	policies := map[uint32]*policyRecord{}
	err := walkCIDRTables(i.pinned.cfg.PinPath, i.pinned.objs.CidrTables, true, func(id uint32, k palisadeCidrKey, _ palisadeCidrValue) error {
		policies[id].keys = append(policies[id].keys, k)
		return nil
	}, func(id uint32) { policies[id] = &policyRecord{} })
	if err != nil {
		return err
	}
	i.pinned.mu.Lock()
	i.pinned.policies = policies
	i.pinned.mu.Unlock()
	return nil
}

// Counters returns the counters of the endpoint behind ifindex.
func (i *Inspection) Counters(ifindex int) (Counters, error) {
	return i.pinned.Counters(ifindex)
}

// Tables returns the rule tables programmed for the endpoint behind
// ifindex per direction (policy.Ingress, policy.Egress), in the form of
// CanonicalTables; a direction that is not isolated is nil.
func (i *Inspection) Tables(ifindex int) ([2]*compile.Direction, error) {
	var out [2]*compile.Direction
	i.pinned.mu.Lock()
	rec := i.pinned.endpoints[ifindex]
	i.pinned.mu.Unlock()
	if rec == nil {
		return out, fmt.Errorf("tables: ifindex %d has no programmed endpoint", ifindex)
	}
	portsets, err := readPortsets(i.pinned.objs.PortRules)
	if err != nil {
		return out, err
	}
	var tables [2]*compile.Direction
	for dir := range 2 {
		if rec.value.Isolated[dir] != 0 {
			tables[dir] = &compile.Direction{}
		}
	}
	for dir, d := range tables {
		if d == nil {
			continue
		}
		id := rec.value.Policy[dir]
		err := walkCIDRTable(i.pinned.cfg.PinPath, i.pinned.objs.CidrTables, id, true, func(_ uint32, k palisadeCidrKey, v palisadeCidrValue) error {
			entry, err := decodeCIDREntry(k, v, portsets, d)
			if err != nil {
				return fmt.Errorf("tables of ifindex %d: %w", ifindex, err)
			}
			d.CIDRs = append(d.CIDRs, entry)
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	for dir, d := range tables {
		if d != nil {
			out[dir] = CanonicalTables(d)
		}
	}
	return out, nil
}

// cidrTablePin is where CIDR table id of the maps pinned at pinPath is
// pinned. Tables are pinned, not only held by cidr_tables, so that a
// process without CAP_SYS_ADMIN (which opening a map by its kernel id
// needs) can open them again.
func cidrTablePin(pinPath string, id uint32) string {
	return filepath.Join(pinPath, cidrTablesDir, strconv.FormatUint(uint64(id), 10))
}

const cidrTablesDir = "cidr_tables_pins" // bpffs refuses dots in names

// openCIDRTable opens table id of tables (the cidr_tables pinned at
// pinPath). A table without a pin, left by a build that did not pin them,
// is opened by its kernel id and, unless readOnly, pinned.
func openCIDRTable(pinPath string, tables *ebpf.Map, id uint32, readOnly bool) (*ebpf.Map, error) {
	pin := cidrTablePin(pinPath, id)
	m, err := ebpf.LoadPinnedMap(pin, &ebpf.LoadPinOptions{ReadOnly: readOnly})
	if err == nil {
		return m, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open CIDR table %d: %w", id, err)
	}
	var mapID ebpf.MapID
	if err := tables.Lookup(id, &mapID); err != nil {
		return nil, fmt.Errorf("CIDR table %d: %w", id, err)
	}
	if m, err = ebpf.NewMapFromID(mapID); err != nil {
		return nil, fmt.Errorf("open CIDR table %d, not pinned at %s: %w", id, pin, err)
	}
	if !readOnly {
		if err := m.Pin(pin); err != nil {
			m.Close()
			return nil, fmt.Errorf("pin CIDR table %d: %w", id, err)
		}
	}
	return m, nil
}

// walkCIDRTables calls table for the id of every table in tables (the
// cidr_tables pinned at pinPath) and fn for each of its entries.
func walkCIDRTables(pinPath string, tables *ebpf.Map, readOnly bool, fn func(uint32, palisadeCidrKey, palisadeCidrValue) error, table func(uint32)) error {
	var id uint32
	var mapID ebpf.MapID
	it := tables.Iterate()
	for it.Next(&id, &mapID) {
		if table != nil {
			table(id)
		}
		if err := walkCIDRTable(pinPath, tables, id, readOnly, fn); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read CIDR tables: %w", err)
	}
	return nil
}

// walkCIDRTable calls fn for each entry of table id.
func walkCIDRTable(pinPath string, tables *ebpf.Map, id uint32, readOnly bool, fn func(uint32, palisadeCidrKey, palisadeCidrValue) error) error {
	m, err := openCIDRTable(pinPath, tables, id, readOnly)
	if err != nil {
		return err
	}
	defer m.Close()
	var k palisadeCidrKey
	var v palisadeCidrValue
	it := m.Iterate()
	for it.Next(&k, &v) {
		if err := fn(id, k, v); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read CIDR table %d: %w", id, err)
	}
	return nil
}

// readPortsets reads the shared port sets of port_rules by id.
func readPortsets(m *ebpf.Map) (map[uint32][]compile.PortEntry, error) {
	out := map[uint32][]compile.PortEntry{}
	var k palisadePortKey
	var rule uint32
	it := m.Iterate()
	for it.Next(&k, &rule) {
		if k.Prefixlen < portKeyBits || k.Prefixlen > portKeyBits+16 {
			return nil, fmt.Errorf("read port rules: prefix length %d out of range", k.Prefixlen)
		}
		set := networkOrder(k.Portset)
		out[set] = append(out[set], compile.PortEntry{
			Protocol: policy.Protocol(k.Proto),
			Port:     binary.BigEndian.Uint16(k.Port[:]),
			Bits:     int(k.Prefixlen) - portKeyBits,
			Rule:     rule,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read port rules: %w", err)
	}
	return out, nil
}

// decodeCIDREntry turns one CIDR table entry back into a compile.CIDREntry,
// appending the port set it allows to d.
func decodeCIDREntry(k palisadeCidrKey, v palisadeCidrValue, portsets map[uint32][]compile.PortEntry, d *compile.Direction) (compile.CIDREntry, error) {
	var addr netip.Addr
	if networkOrder(k.Tag)&1 == 1 {
		addr = netip.AddrFrom4([4]byte(k.Addr[:4]))
	} else {
		addr = netip.AddrFrom16(k.Addr)
	}
	if k.Prefixlen < cidrKeyBits {
		return compile.CIDREntry{}, fmt.Errorf("CIDR key of prefix length %d shorter than its tag", k.Prefixlen)
	}
	prefix, err := addr.Prefix(int(k.Prefixlen) - cidrKeyBits)
	if err != nil {
		return compile.CIDREntry{}, fmt.Errorf("CIDR key: %w", err)
	}
	entry := compile.CIDREntry{Prefix: prefix, Portset: -1}
	var ports []compile.PortEntry
	switch {
	case v.Portset != 0:
		ports = portsets[v.Portset]
		if len(ports) == 0 {
			return compile.CIDREntry{}, fmt.Errorf("%s leads to port set %d, which has no entry", prefix, v.Portset)
		}
	case v.InlineCount > uint32(len(v.InlinePorts)):
		return compile.CIDREntry{}, fmt.Errorf("%s holds %d inline ports, at most %d fit", prefix, v.InlineCount, len(v.InlinePorts))
	default:
		for _, p := range v.InlinePorts[:v.InlineCount] {
			ports = append(ports, compile.PortEntry{Protocol: policy.Protocol(p.Proto), Port: p.Port, Bits: int(p.Bits), Rule: p.Rule})
		}
	}
	if len(ports) > 0 {
		entry.Portset = len(d.Portsets)
		d.Portsets = append(d.Portsets, compile.Portset{Entries: slices.Clone(ports)})
	}
	if v.Flags&cidrAnyProto != 0 {
		entry.AnyProtocol, entry.AnyRule = true, v.AnyRule
	}
	return entry, nil
}

// CanonicalTables returns d with prefixes sorted (IPv4 first), identical
// port sets merged and numbered in order of first use, and port entries
// sorted, so that equal tables compare and print equal however they were
// built or stored.
func CanonicalTables(d *compile.Direction) *compile.Direction {
	cidrs := slices.Clone(d.CIDRs)
	slices.SortFunc(cidrs, func(a, b compile.CIDREntry) int {
		return cmp.Or(cmp.Compare(familyRank(a.Prefix.Addr()), familyRank(b.Prefix.Addr())),
			a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	out := &compile.Direction{}
	index := map[string]int{}
	for i := range cidrs {
		if cidrs[i].Portset < 0 {
			continue
		}
		entries := slices.Clone(d.Portsets[cidrs[i].Portset].Entries)
		slices.SortFunc(entries, func(a, b compile.PortEntry) int {
			return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Bits, b.Bits), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Rule, b.Rule))
		})
		text := fmt.Sprint(entries)
		n, seen := index[text]
		if !seen {
			n = len(out.Portsets)
			index[text] = n
			out.Portsets = append(out.Portsets, compile.Portset{Entries: entries})
		}
		cidrs[i].Portset = n
	}
	out.CIDRs = cidrs
	return out
}

func familyRank(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// TestPolicyReplaceIsAtomic switches between two policies while packets
// flow: what both allow always passes, what both deny never does.
func TestPolicyReplaceIsAtomic(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	policyWith := func(extraPort uint16, extraCIDRs int) *policy.Endpoint {
		ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 1, CIDR: netip.MustParsePrefix("10.0.1.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("10.0.1.128/25")},
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}, {Protocol: policy.TCP, Port: extraPort}}},
		}}}
		for i := range extraCIDRs {
			ep.Ingress.Rules = append(ep.Ingress.Rules, policy.Rule{ID: uint32(100 + i),
				CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 32)})
		}
		return ep
	}
	policies := []*policy.Endpoint{policyWith(81, 50), policyWith(82, 300)}
	if _, err := d.SetPolicy(ifindex, policies[0]); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sent, violations atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for port := uint16(1024); !stop.Load(); port++ {
			allowed := tcp(peerIP, podIP, port, 80, packet.SYN)                           // both allow
			denied := tcp(netip.MustParseAddr("10.0.1.200"), podIP, port, 80, packet.SYN) // both except it
			if ok, err := runFrameErr(d, policy.Ingress, ifindex, allowed); err != nil || !ok {
				violations.Add(1)
			}
			if ok, err := runFrameErr(d, policy.Ingress, ifindex, denied); err != nil || ok {
				violations.Add(1)
			}
			sent.Add(2)
		}
	}()
	for i := range 300 {
		if _, err := d.SetPolicy(ifindex, policies[(i+1)%2]); err != nil {
			t.Error(err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if v := violations.Load(); v != 0 {
		t.Errorf("%d of %d packets judged against both policies during 300 replacements", v, sent.Load())
	}
	t.Logf("%d packets during 300 replacements", sent.Load())
	// The last policy (policies[0]: 2 entries for rule 1 and its except, 50 hosts) alone remains.
	waitForUsage(t, d, "cidr_rules", 52)
}

// waitForUsage waits until the background freeing brings map name to want
// entries, failing the test after two seconds.
func waitForUsage(t *testing.T, d *Dataplane, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		occ, err := d.Occupancy()
		if err != nil {
			t.Fatal(err)
		}
		got := occ[name].Used
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s entries used two seconds after the last update, want %d: retired entries leaked", got, name, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkSetPolicy reports the latency of replacing an endpoint's policy
// (50 CIDRs and a port list) by another: the same endpoint back to back
// (each update waits for the grace period of the previous one), and 100
// endpoints in turn, as an agent reprogramming a node's pods does.
func BenchmarkSetPolicy(b *testing.B) {
	policies := benchPolicies()
	for _, endpoints := range []int{1, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", endpoints), func(b *testing.B) {
			d := newDataplane(b, Config{})
			ifindexes := make([]int, endpoints)
			for i := range ifindexes {
				ifindexes[i] = dummyLink(b)
				if _, err := d.SetPolicy(ifindexes[i], policies[1]); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; b.Loop(); i++ {
				if _, err := d.SetPolicy(ifindexes[i%endpoints], policies[(i/endpoints)%2]); err != nil {
					b.Fatal(err)
				}
			}
			d.mu.Lock()
			waits := d.grace.started
			d.mu.Unlock()
			b.ReportMetric(float64(waits)/float64(b.N), "grace-waits/op")
		})
	}
}

func benchPolicies() []*policy.Endpoint {
	policies := make([]*policy.Endpoint, 2)
	for p := range policies {
		ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
		for i := range 50 {
			ep.Ingress.Rules = append(ep.Ingress.Rules, policy.Rule{ID: uint32(i + 1),
				CIDR:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(p), 0, byte(i)}), 32),
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}, {Protocol: policy.TCP, Port: 8080 + uint16(p)}}})
		}
		policies[p] = ep
	}
	return policies
}

// TestRemoveAndReaddIsAtomic removes and re-adds the only endpoint slot's
// policy while packets flow: a packet both the policy and no policy allow
// always passes, and the slot and entries of a removal are freed.
func TestRemoveAndReaddIsAtomic(t *testing.T) {
	d := newDataplane(t, Config{MaxEndpoints: 1})
	ifindex := dummyLink(t)
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sent, violations atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for port := uint16(1024); !stop.Load(); port++ {
			if ok, err := runFrameErr(d, policy.Ingress, ifindex, tcp(peerIP, podIP, port, 80, packet.SYN)); err != nil || !ok {
				violations.Add(1)
			}
			sent.Add(1)
		}
	}()
	const cycles = 100
	for range cycles {
		if err := d.RemovePolicy(ifindex); err != nil {
			t.Error(err)
			break
		}
		if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
			t.Errorf("re-adding into the freed slot: %v", err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if v := violations.Load(); v != 0 {
		t.Errorf("%d of %d allowed packets denied during %d removals", v, sent.Load(), cycles)
	}
	t.Logf("%d packets during %d removals", sent.Load(), cycles)
	if err := d.RemovePolicy(ifindex); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"endpoints", "cidr_rules", "port_rules"} {
		waitForUsage(t, d, name, 0)
	}
	d.mu.Lock()
	slots := len(d.slotsUsed)
	d.mu.Unlock()
	if slots != 0 {
		t.Errorf("%d endpoint slots still used after removal", slots)
	}
}

// hostsPolicy isolates ingress and allows n /32 peers from 10.first.x.y:
// n CIDR entries.
func hostsPolicy(first byte, n int) *policy.Endpoint {
	ep := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
	for i := range n {
		ep.Ingress.Rules = append(ep.Ingress.Rules, policy.Rule{ID: uint32(i + 1),
			CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, first, byte(i >> 8), byte(i)}), 32)})
	}
	return ep
}

func cidrRulesUsed(t *testing.T, d *Dataplane) int {
	t.Helper()
	occ, err := d.Occupancy()
	if err != nil {
		t.Fatal(err)
	}
	return occ["cidr_rules"].Used
}

// TestRetiredEntriesFreedInBackground: a replaced policy's entries count
// until the background wait frees them, without another update.
func TestRetiredEntriesFreedInBackground(t *testing.T) {
	d := newDataplane(t, Config{RuleCapacity: 100})
	ifindex := dummyLink(t)
	for _, ep := range []*policy.Endpoint{hostsPolicy(1, 60), hostsPolicy(2, 10)} {
		if _, err := d.SetPolicy(ifindex, ep); err != nil {
			t.Fatal(err)
		}
	}
	waitForUsage(t, d, "cidr_rules", 10)
	if _, err := d.SetPolicy(ifindex, hostsPolicy(3, 60)); err != nil {
		t.Fatalf("60 entries beside 10 in a map of 100: %v", err)
	}
	waitForUsage(t, d, "cidr_rules", 60)
}

// TestCapacityWaitsForRetiredEntries: with the background freeing stopped,
// retired entries stay counted, and an update that needs their room frees
// them itself instead of failing; one that cannot fit still fails.
func TestCapacityWaitsForRetiredEntries(t *testing.T) {
	d := newDataplane(t, Config{RuleCapacity: 100})
	d.stopFreeing()
	ifindex := dummyLink(t)
	for _, ep := range []*policy.Endpoint{hostsPolicy(1, 60), hostsPolicy(2, 10)} {
		if _, err := d.SetPolicy(ifindex, ep); err != nil {
			t.Fatal(err)
		}
	}
	if got := cidrRulesUsed(t, d); got != 70 {
		t.Fatalf("%d CIDR entries used, want 70: the 60 retired ones count until freed", got)
	}
	if _, err := d.SetPolicy(ifindex, hostsPolicy(3, 60)); err != nil {
		t.Fatalf("60 entries needing the retired ones' room: %v", err)
	}
	if got := cidrRulesUsed(t, d); got != 70 {
		t.Fatalf("%d CIDR entries used, want 70 (60 live, 10 retired)", got)
	}
	if _, err := d.SetPolicy(ifindex, hostsPolicy(4, 50)); !errors.Is(err, ErrCapacity) {
		t.Fatalf("50 entries beside 60 live in a map of 100: err %v, want ErrCapacity", err)
	}
}

// TestCloseFreesRetiredEntries: entries retired but not yet freed are
// deleted by Close; the pinned CIDR table then holds the live policy only.
func TestCloseFreesRetiredEntries(t *testing.T) {
	d := newDataplane(t, Config{})
	d.stopFreeing()
	ifindex := dummyLink(t)
	for _, ep := range []*policy.Endpoint{hostsPolicy(1, 60), hostsPolicy(2, 10)} {
		if _, err := d.SetPolicy(ifindex, ep); err != nil {
			t.Fatal(err)
		}
	}
	if got := cidrRulesUsed(t, d); got != 70 {
		t.Fatalf("%d CIDR entries used before Close, want 70 (60 retired)", got)
	}
	live := d.endpoints[ifindex].value.Policy[policy.Ingress]
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(d.cfg.PinPath, palisadeMapCidrTables), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	entries := 0
	err = walkCIDRTables(d.cfg.PinPath, pinned, true, func(id uint32, k palisadeCidrKey, _ palisadeCidrValue) error {
		entries++
		if id != live {
			return fmt.Errorf("entry of table %d left after Close, the live table is %d", id, live)
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if entries != 10 {
		t.Errorf("%d CIDR entries pinned after Close, want the live policy's 10", entries)
	}
}

// TestReferenceSwitchesChangeOneByte fills more than 256 endpoint slots and
// updates each endpoint: its reference must only ever change in its lowest
// byte, so that a program reading it while user space writes it byte by
// byte sees the old or the new record, never another one or none. The
// slots skipped for that still leave MaxEndpoints endpoints, and no more.
func TestReferenceSwitchesChangeOneByte(t *testing.T) {
	const endpoints = 300
	d := newDataplane(t, Config{MaxEndpoints: endpoints})
	ref := func(ifindex int) uint32 {
		t.Helper()
		var v uint32
		if err := d.objs.EndpointRefs.Lookup(uint32(ifindex), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	first, second := webPolicy(), webPolicy()
	second.Ingress.Rules[0].Ports[0].Port++
	var previous []uint32
	for i := range endpoints {
		if _, err := d.SetPolicy(1000+i, first); err != nil {
			t.Fatalf("endpoint %d of %d: %v", i+1, endpoints, err)
		}
		previous = append(previous, ref(1000+i))
	}
	if _, err := d.SetPolicy(1000+endpoints, first); !errors.Is(err, ErrCapacity) {
		t.Errorf("endpoint %d of MaxEndpoints %d: err %v, want ErrCapacity", endpoints+1, endpoints, err)
	}
	for i := range endpoints {
		if _, err := d.SetPolicy(1000+i, second); err != nil {
			t.Fatal(err)
		}
		now := ref(1000 + i)
		if now == previous[i] || (now^previous[i])&^0xff != 0 || now == 0 {
			t.Errorf("endpoint %d: reference %#x became %#x", i, previous[i], now)
		}
	}
}

// TestCIDRTablesAreBoundedAndReused: every distinct table takes one of
// MaxTables ids; when none is free the update fails closed with
// ErrCapacity, a freed id serves the next table, and a restarted dataplane
// knows which ids live tables hold.
func TestCIDRTablesAreBoundedAndReused(t *testing.T) {
	d := newDataplane(t, Config{MaxTables: 2, MaxEndpoints: 8})
	a, b, c := dummyLink(t), dummyLink(t), dummyLink(t)
	from := func(first byte) []byte {
		return tcp(netip.AddrFrom4([4]byte{10, first, 0, 1}), podIP, 1000, 80, packet.SYN)
	}
	judge := func(d *Dataplane, when string, ifindex int, first byte, want bool) {
		t.Helper()
		if got := runFrame(t, d, policy.Ingress, ifindex, from(first)); got != want {
			t.Errorf("%s: ifindex %d, peer 10.%d.0.1: allowed=%v, want %v", when, ifindex, first, got, want)
		}
	}
	for i, ifindex := range []int{a, b} {
		if _, err := d.SetPolicy(ifindex, hostsPolicy(byte(i+1), 5)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.SetPolicy(c, hostsPolicy(3, 5)); !errors.Is(err, ErrCapacity) {
		t.Fatalf("a third table of two ids: %v, want ErrCapacity", err)
	}
	judge(d, "no table left", c, 3, false)
	if err := d.RemovePolicy(b); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetPolicy(c, hostsPolicy(3, 5)); err != nil {
		t.Fatalf("once a table is freed: %v", err)
	}
	judge(d, "freed id reused", c, 3, true)
	judge(d, "freed id reused", c, 2, false)
	judge(d, "freed id reused", a, 1, true)

	reopened := reopen(t, d)
	if _, err := reopened.SetPolicy(b, hostsPolicy(4, 5)); !errors.Is(err, ErrCapacity) {
		t.Fatalf("after reopening, with both ids in use: %v, want ErrCapacity", err)
	}
	if err := reopened.RemovePolicy(a); err != nil {
		t.Fatal(err)
	}
	if _, err := reopened.SetPolicy(b, hostsPolicy(4, 5)); err != nil {
		t.Fatalf("after reopening, once a table is freed: %v", err)
	}
	judge(reopened, "reopened", b, 4, true)
	judge(reopened, "reopened", c, 3, true)
	judge(reopened, "reopened", c, 4, false)
}

// TestOpenRefusesTheSharedTrieLayout: maps pinned by a release that kept
// every endpoint's rules in one cidr_rules trie are not adopted (their
// endpoint records name tables this release does not have).
func TestOpenRefusesTheSharedTrieLayout(t *testing.T) {
	ensureBPFFS(t)
	dir := filepath.Join(bpffs, randomName("palisade-test-"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(dir, "cidr_rules")); err != nil {
		t.Fatal(err)
	}
	if d, err := Open(Config{PinPath: dir}); !errors.Is(err, ebpf.ErrMapIncompatible) {
		if d != nil {
			d.Purge()
		}
		t.Fatalf("Open over the old layout: %v, want ErrMapIncompatible", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cidr_rules")); err != nil {
		t.Errorf("the old layout's map was touched: %v", err)
	}
}

// TestTablesStayInTheArray: replacing policies reuses emptied tables, so
// the array of maps (each update of which waits for a grace period) only
// grows by whole batches; and a live table without entries (a direction
// that allows nothing) is not taken for a free one after a restart.
func TestTablesStayInTheArray(t *testing.T) {
	d := newDataplane(t, Config{})
	a, b := dummyLink(t), dummyLink(t)
	for i := range 100 {
		if _, err := d.SetPolicy(a, hostsPolicy(byte(i), 3)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			flushNow(t, d)
		}
	}
	if d.nextPolicy-1 != tablesPerBatch {
		t.Errorf("100 replacements put %d tables into the array, want one batch of %d", d.nextPolicy-1, tablesPerBatch)
	}
	if _, err := d.SetPolicy(b, &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}); err != nil {
		t.Fatal(err)
	}
	reopened := reopen(t, d)
	empty := reopened.endpoints[b].value.Policy[policy.Ingress]
	if reopened.policies[empty] == nil || slices.Contains(reopened.freeTables, empty) {
		t.Fatalf("after reopening, the live empty table %d is taken for a free one", empty)
	}
	for i := range 3 {
		if _, err := reopened.SetPolicy(a, hostsPolicy(byte(200+i), 3)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		peer := tcp(netip.AddrFrom4([4]byte{10, byte(200 + i), 0, 0}), podIP, 1000, 80, packet.SYN)
		if runFrame(t, reopened, policy.Ingress, b, peer) {
			t.Errorf("the endpoint that allows nothing let in a peer of another endpoint's table %d", i)
		}
	}
	if !runFrame(t, reopened, policy.Ingress, a, tcp(netip.AddrFrom4([4]byte{10, 202, 0, 0}), podIP, 1000, 80, packet.SYN)) {
		t.Error("the replaced policy does not allow its peer")
	}
}

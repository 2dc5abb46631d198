package dataplane

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// TestIfindexesBeyondTheArray programs one endpoint whose ifindex is inside
// the ifindex array (loopback, 1) and one beyond it (a veth, through the
// hash), replaces, reopens and removes them.
func TestIfindexesBeyondTheArray(t *testing.T) {
	d := newDataplane(t, Config{IfindexArraySize: 2})
	const inArray = 1
	beyond := dummyLink(t)
	if beyond < 2 {
		t.Fatalf("veth ifindex %d is inside the array", beyond)
	}
	allowed := tcp(peerIP, podIP, 40000, 80, packet.SYN)
	denied := tcp(otherIP, podIP, 40001, 80, packet.SYN)
	judge := func(step string, ifindex int, wantAllowed, wantDenied bool) {
		t.Helper()
		if got := runFrame(t, d, policy.Ingress, ifindex, allowed); got != wantAllowed {
			t.Errorf("%s: ifindex %d passed the allowed packet: %v, want %v", step, ifindex, got, wantAllowed)
		}
		if got := runFrame(t, d, policy.Ingress, ifindex, denied); got != wantDenied {
			t.Errorf("%s: ifindex %d passed the denied packet: %v, want %v", step, ifindex, got, wantDenied)
		}
	}
	for _, ifindex := range []int{inArray, beyond} {
		if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
			t.Fatal(err)
		}
		judge("programmed", ifindex, true, false)
	}
	// The replacement goes to the other record of each endpoint.
	denyAll := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
	for _, ifindex := range []int{inArray, beyond} {
		if _, err := d.SetPolicy(ifindex, denyAll); err != nil {
			t.Fatal(err)
		}
		judge("replaced", ifindex, false, false)
		if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
			t.Fatal(err)
		}
		judge("replaced back", ifindex, true, false)
	}

	d = reopen(t, d)
	states, err := d.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || states[0].Ifindex != inArray || states[1].Ifindex != beyond {
		t.Fatalf("endpoints after reopening: %+v", states)
	}
	for _, ifindex := range []int{inArray, beyond} {
		judge("reopened", ifindex, true, false)
		if err := d.RemovePolicy(ifindex); err != nil {
			t.Fatal(err)
		}
		judge("removed", ifindex, true, true)
	}
	if n, err := countEntries(d.objs.EndpointRefsHash); err != nil || n != 0 {
		t.Errorf("%d entries left in the ifindex hash (%v)", n, err)
	}
}

// TestEndpointsWithTheSameRulesShareOneTable: endpoints whose rules
// compile to the same entries (replicas) share one CIDR table, and each
// keeps its own verdicts through changes, removal and a restart.
func TestEndpointsWithTheSameRulesShareOneTable(t *testing.T) {
	ensureBPFFS(t)
	cfg := Config{PinPath: filepath.Join(bpffs, randomName("palisade-test-")), ConntrackSize: 4096, RuleCapacity: 4096}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Purge() })
	a, b := dummyLink(t), dummyLink(t)
	used := func() int {
		t.Helper()
		flushNow(t, d)
		occupancy, err := d.Occupancy()
		if err != nil {
			t.Fatal(err)
		}
		return occupancy["cidr_rules"].Used
	}
	set := func(ifindex int, ep *policy.Endpoint) {
		t.Helper()
		if _, err := d.SetPolicy(ifindex, ep); err != nil {
			t.Fatal(err)
		}
	}
	allowed := tcp(peerIP, podIP, 40000, 80, packet.SYN)
	denied := tcp(otherIP, podIP, 40000, 80, packet.SYN)
	wantVerdicts := func(when string, ifindex int, wantAllowed bool) {
		t.Helper()
		if got := runFrame(t, d, policy.Ingress, ifindex, allowed); got != wantAllowed {
			t.Errorf("%s: ifindex %d let a peer of the web rule in: %v, want %v", when, ifindex, got, wantAllowed)
		}
		if runFrame(t, d, policy.Ingress, ifindex, denied) {
			t.Errorf("%s: ifindex %d let a denied peer in", when, ifindex)
		}
	}

	set(a, webPolicy())
	one := used()
	set(b, webPolicy())
	if got := used(); got != one {
		t.Fatalf("a second endpoint with the same rules: %d CIDR entries, want %d", got, one)
	}
	wantVerdicts("shared", a, true)
	wantVerdicts("shared", b, true)

	// b moves to other rules: a keeps the table, b gets its own.
	other := webPolicy()
	other.Ingress.Rules[0].CIDR = netip.MustParsePrefix("10.0.9.0/24")
	set(b, other)
	two := used()
	if two <= one {
		t.Fatalf("after b changed: %d CIDR entries, want more than %d", two, one)
	}
	wantVerdicts("b changed", a, true)
	wantVerdicts("b changed", b, false)

	// Back to the same rules, then a restart: the table is shared again,
	// and removing one endpoint leaves it to the other.
	set(b, webPolicy())
	if got := used(); got != one {
		t.Fatalf("b back to a's rules: %d CIDR entries, want %d", got, one)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePolicy(a); err != nil {
		t.Fatal(err)
	}
	if got := used(); got != one {
		t.Fatalf("a removed after a restart: %d CIDR entries, want b's %d", got, one)
	}
	wantVerdicts("a removed", b, true)
	set(a, other)
	wantVerdicts("a back with other rules", a, false)
	wantVerdicts("a back with other rules", b, true)
	if got := used(); got != two {
		t.Fatalf("a and b with different rules again: %d CIDR entries, want %d", got, two)
	}
	if err := d.RemovePolicy(b); err != nil {
		t.Fatal(err)
	}
	if got := used(); got >= two {
		t.Fatalf("b's table not freed with b: %d CIDR entries", got)
	}
	wantVerdicts("b removed", a, false)
}

// TestPolicyTextIgnoresOrderOnly: two tables are the same one when their
// entries are, whatever their order.
func TestPolicyTextIgnoresOrderOnly(t *testing.T) {
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/64")}
	table := func(order []int, rule uint32) string {
		var keys []palisadeCidrKey
		var values []palisadeCidrValue
		for _, i := range order {
			keys = append(keys, cidrKeyOf(prefixes[i]))
			values = append(values, palisadeCidrValue{Flags: cidrAnyProto, AnyRule: rule + uint32(i)})
		}
		return policyText(keys, values)
	}
	base := table([]int{0, 1, 2}, 10)
	if got := table([]int{2, 0, 1}, 10); got != base {
		t.Error("another order made another table")
	}
	if got := table([]int{0, 1, 2}, 11); got == base {
		t.Error("other rule ids made the same table")
	}
	if got := table([]int{0, 1}, 10); got == base {
		t.Error("a missing entry made the same table")
	}
	v4 := cidrKeyOf(netip.MustParsePrefix("10.0.0.0/8"))
	v6 := cidrKeyOf(netip.MustParsePrefix("a00::/8"))
	value := []palisadeCidrValue{{Flags: cidrAnyProto}}
	if policyText([]palisadeCidrKey{v4}, value) == policyText([]palisadeCidrKey{v6}, value) {
		t.Error("an IPv4 and an IPv6 prefix of the same bits made the same table")
	}
}

// TestEndpointsBeyondTheSlotsAreClosed: with every slot in use, a new
// endpoint is closed on the shared closed reference, not left open; it gets
// a slot of its own once one is free, and can be removed either way.
func TestEndpointsBeyondTheSlotsAreClosed(t *testing.T) {
	d := newDataplane(t, Config{MaxEndpoints: 2})
	a, b, c := dummyLink(t), dummyLink(t), dummyLink(t)
	open := &policy.Endpoint{}
	for _, ifindex := range []int{a, b} {
		if _, err := d.SetPolicy(ifindex, open); err != nil {
			t.Fatal(err)
		}
	}
	_, err := d.SetPolicy(c, &policy.Endpoint{Ingress: policy.Direction{Isolated: true}})
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("third endpoint of two slots: %v, want ErrCapacity", err)
	}
	syn := tcp(peerIP, podIP, 40000, 80, packet.SYN)
	out := tcp(podIP, peerIP, 40000, 80, packet.SYN)
	if runFrame(t, d, policy.Ingress, c, syn) || runFrame(t, d, policy.Egress, c, out) {
		t.Fatal("an endpoint beyond the slots passes traffic")
	}
	if counters, err := d.Counters(c); err != nil || counters != (Counters{}) {
		t.Errorf("counters of the closed endpoint: %+v, %v", counters, err)
	}
	// Still closed after a restart.
	d = reopen(t, d)
	if runFrame(t, d, policy.Ingress, c, syn) {
		t.Fatal("the closed endpoint opened in a restart")
	}
	if err := d.RemovePolicy(a); err != nil {
		t.Fatal(err)
	}
	flushNow(t, d)
	if _, err := d.SetPolicy(c, open); err != nil {
		t.Fatalf("once a slot is free: %v", err)
	}
	if !runFrame(t, d, policy.Ingress, c, syn) {
		t.Fatal("the endpoint's own policy does not apply once it has a slot")
	}
	if counters, err := d.Counters(c); err != nil || counters.Ingress.AllowPackets != 1 {
		t.Errorf("counters of its own slot: %+v, %v", counters, err)
	}
	if err := d.RemovePolicy(b); err != nil {
		t.Fatal(err)
	}
	flushNow(t, d)
	// The shared record can be removed too.
	if _, err := d.SetPolicy(a, open); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetPolicy(b, open); !errors.Is(err, ErrCapacity) {
		t.Fatalf("third endpoint again: %v", err)
	}
	if err := d.RemovePolicy(b); err != nil {
		t.Fatal(err)
	}
	if !runFrame(t, d, policy.Ingress, b, syn) {
		t.Error("an endpoint removed from the shared closed reference is still closed")
	}
}

// TestFailedEndpointStartsWithZeroCounters: an endpoint closed because its
// policy failed does not inherit the counters of its slot's previous owner.
func TestFailedEndpointStartsWithZeroCounters(t *testing.T) {
	d := newDataplane(t, Config{RuleCapacity: 4})
	a, b := dummyLink(t), dummyLink(t)
	if _, err := d.SetPolicy(a, &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		runFrame(t, d, policy.Ingress, a, tcp(peerIP, podIP, 40000, 80, packet.SYN))
	}
	if err := d.RemovePolicy(a); err != nil {
		t.Fatal(err)
	}
	flushNow(t, d)
	big := &policy.Endpoint{Ingress: policy.Direction{Isolated: true}}
	for i := range 10 {
		big.Ingress.Rules = append(big.Ingress.Rules, policy.Rule{ID: uint32(i + 1), CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)})
	}
	if _, err := d.SetPolicy(b, big); !errors.Is(err, ErrCapacity) {
		t.Fatalf("SetPolicy of 10 rules into 4: %v", err)
	}
	if counters, err := d.Counters(b); err != nil || counters != (Counters{}) {
		t.Errorf("counters of the endpoint closed on a reused slot: %+v, %v", counters, err)
	}
}

// TestReopenRefusesAnotherRuleCapacity: CIDR tables hold at most
// RuleCapacity entries each, so tables pinned with another one are
// refused, as other resized maps are, instead of failing updates later.
func TestReopenRefusesAnotherRuleCapacity(t *testing.T) {
	d := newDataplane(t, Config{RuleCapacity: 64})
	if _, err := d.SetPolicy(dummyLink(t), webPolicy()); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := d.cfg
	cfg.RuleCapacity = 4096
	if reopened, err := Open(cfg); !errors.Is(err, ebpf.ErrMapIncompatible) {
		if err == nil {
			reopened.Close()
		}
		t.Fatalf("Open with RuleCapacity 4096 over tables of 64: %v, want ErrMapIncompatible", err)
	}
}

// TestStaleTablePinIsReplaced: a table pinned by a process stopped before
// cidr_tables held it does not stop the next batch of tables.
func TestStaleTablePinIsReplaced(t *testing.T) {
	d := newDataplane(t, Config{})
	stale, err := ebpf.NewMap(d.tableSpec)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	if err := stale.Pin(cidrTablePin(d.cfg.PinPath, d.nextPolicy)); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	err = d.addTables()
	d.mu.Unlock()
	if err != nil {
		t.Fatalf("adding tables over a stale pin: %v", err)
	}
}

// TestReferenceToAnotherRecordCloses: a veth whose reference leads to a
// record not written for it (as one read while being written may: the
// kernel promises no whole read of an array value) is closed, whatever that
// record allows.
func TestReferenceToAnotherRecordCloses(t *testing.T) {
	d := newDataplane(t, Config{MaxEndpoints: 8})
	a, b := dummyLink(t), dummyLink(t)
	if _, err := d.SetPolicy(b, &policy.Endpoint{}); err != nil {
		t.Fatal(err)
	}
	syn := tcp(peerIP, podIP, 40000, 80, packet.SYN)
	if !runFrame(t, d, policy.Ingress, b, syn) || !runFrame(t, d, policy.Ingress, a, syn) {
		t.Fatal("an open endpoint and an unmanaged veth must pass")
	}
	refs := []struct {
		name string
		ref  uint32
	}{
		{"another veth's record", d.endpoints[b].record + 1},
		{"the record of an unused slot", 2*5 + 1},
		{"past the records", 0xffff},
	}
	for _, r := range refs {
		if err := d.setEndpointRef(a, r.ref); err != nil {
			t.Fatal(err)
		}
		if runFrame(t, d, policy.Ingress, a, syn) || runFrame(t, d, policy.Egress, a, tcp(podIP, peerIP, 40000, 80, packet.SYN)) {
			t.Errorf("a reference to %s passes traffic", r.name)
		}
	}
	if err := d.setEndpointRef(a, 0); err != nil {
		t.Fatal(err)
	}
	if !runFrame(t, d, policy.Ingress, b, syn) {
		t.Error("the other veth's own reference no longer passes")
	}
}

// TestRecordsOfAnOlderReleaseAreNamed: records written before they named
// their veth are named at Open, before programs that check the name run.
func TestRecordsOfAnOlderReleaseAreNamed(t *testing.T) {
	d := newDataplane(t, Config{})
	a := dummyLink(t)
	allow := &policy.Endpoint{Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{
		{ID: 1, CIDR: netip.PrefixFrom(peerIP, 32)},
	}}}
	if _, err := d.SetPolicy(a, allow); err != nil {
		t.Fatal(err)
	}
	rec := d.endpoints[a]
	legacy := rec.value
	legacy.Ifindex = 0
	if err := d.objs.EndpointRecords.Update(rec.record, &legacy, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	syn := tcp(peerIP, podIP, 40000, 80, packet.SYN)
	if runFrame(t, d, policy.Ingress, a, syn) {
		t.Fatal("a record that does not name its veth judged the veth's packet")
	}
	d = reopen(t, d)
	if !runFrame(t, d, policy.Ingress, a, syn) {
		t.Fatal("after Open, the older release's record does not apply")
	}
	if runFrame(t, d, policy.Ingress, a, tcp(podIP, peerIP, 40000, 80, packet.SYN)) {
		t.Fatal("after Open, the record's policy does not apply")
	}
}

// TestRevisionsAreNotGivenAgain: after a restart, the next revision is above
// every one given before, also those of endpoints removed since, whose
// decisions programs still attached may hold.
func TestRevisionsAreNotGivenAgain(t *testing.T) {
	d := newDataplane(t, Config{})
	a, b := dummyLink(t), dummyLink(t)
	if _, err := d.SetPolicy(a, &policy.Endpoint{}); err != nil {
		t.Fatal(err)
	}
	removed, err := d.SetPolicy(b, &policy.Endpoint{Ingress: policy.Direction{Isolated: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePolicy(b); err != nil {
		t.Fatal(err)
	}
	flushNow(t, d)
	d = reopen(t, d)
	next, err := d.SetPolicy(b, &policy.Endpoint{})
	if err != nil {
		t.Fatal(err)
	}
	if next <= removed {
		t.Errorf("revision %d given after a restart; %d was given before it", next, removed)
	}
}

// TestFreedRecordsNoLongerNameTheirVeth: once its slot is free, a record
// no longer names its veth, so a reference read half written that leads
// back to it closes the veth instead of applying a policy it no longer has;
// Open unnames the records of slots a stopped process did not free.
func TestFreedRecordsNoLongerNameTheirVeth(t *testing.T) {
	d := newDataplane(t, Config{})
	a := dummyLink(t)
	if _, err := d.SetPolicy(a, &policy.Endpoint{}); err != nil {
		t.Fatal(err)
	}
	record := d.endpoints[a].record
	if err := d.RemovePolicy(a); err != nil {
		t.Fatal(err)
	}
	flushNow(t, d)
	syn := tcp(peerIP, podIP, 40000, 80, packet.SYN)
	if err := d.setEndpointRef(a, record+1); err != nil {
		t.Fatal(err)
	}
	if runFrame(t, d, policy.Ingress, a, syn) {
		t.Error("a freed record applied its policy to its former veth")
	}
	var ep palisadeEndpoint
	if err := d.objs.EndpointRecords.Lookup(record, &ep); err != nil {
		t.Fatal(err)
	}
	ep.Ifindex = uint32(a)
	if err := d.objs.EndpointRecords.Update(record, &ep, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	if err := d.setEndpointRef(a, 0); err != nil {
		t.Fatal(err)
	}
	d = reopen(t, d)
	if err := d.setEndpointRef(a, record+1); err != nil {
		t.Fatal(err)
	}
	if runFrame(t, d, policy.Ingress, a, syn) {
		t.Error("after Open, the record of an unused slot still names its former veth")
	}
	if err := d.setEndpointRef(a, 0); err != nil {
		t.Fatal(err)
	}
}

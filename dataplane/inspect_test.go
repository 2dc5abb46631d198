package dataplane

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/dataplane/compile"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// inspectedPolicy has port sets held inline in the CIDR value (one or two
// entries) and one shared through port_rules (more), an except, a rule
// without ports, and a deny-all egress.
func inspectedPolicy() *policy.Endpoint {
	return &policy.Endpoint{
		Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 10, CIDR: netip.MustParsePrefix("10.0.1.0/24"), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}}},
			{ID: 11, CIDR: netip.MustParsePrefix("fd00:1::/64"), Ports: []policy.PortRange{
				{Protocol: policy.TCP, Port: 8080, EndPort: 8090}, {Protocol: policy.UDP, Port: 53}, {Protocol: policy.SCTP, Port: 7}}},
			{ID: 12, CIDR: netip.MustParsePrefix("172.16.0.0/12"), Except: []netip.Prefix{netip.MustParsePrefix("172.16.5.0/24")}},
		}},
		Egress: policy.Direction{Isolated: true},
	}
}

func openInspection(t *testing.T, pinPath string) *Inspection {
	t.Helper()
	in, err := Inspect(pinPath)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	t.Cleanup(func() {
		if err := in.Close(); err != nil {
			t.Errorf("close inspection: %v", err)
		}
	})
	return in
}

// The inspection of the pinned maps reports what the dataplane that
// programmed them reports, for an ifindex found through the array and one
// found through the hash.
func TestInspectReportsWhatTheDataplaneProgrammed(t *testing.T) {
	d := newDataplane(t, Config{IfindexArraySize: 2})
	const inArray = 1
	beyond := dummyLink(t)
	if _, err := d.SetPolicy(inArray, webPolicy()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetPolicy(beyond, inspectedPolicy()); err != nil {
		t.Fatal(err)
	}
	frames := []struct {
		dir     policy.Dir
		ifindex int
		frame   []byte
		allowed bool
	}{
		{policy.Ingress, beyond, tcp(peerIP6, podIP6, 40000, 8085, packet.SYN), true},
		{policy.Ingress, beyond, udp(netip.MustParseAddr("172.16.4.1"), podIP, 40000, 9), true},
		{policy.Ingress, beyond, udp(netip.MustParseAddr("172.16.5.1"), podIP, 40000, 9), false},
		{policy.Egress, beyond, udp(podIP, peerIP, 40000, 53), false},
		{policy.Ingress, inArray, tcp(otherIP, podIP, 40000, 80, packet.SYN), false},
	}
	for _, f := range frames {
		if got := runFrame(t, d, f.dir, f.ifindex, f.frame); got != f.allowed {
			t.Fatalf("%v frame on ifindex %d passed: %v, want %v", f.dir, f.ifindex, got, f.allowed)
		}
	}

	in := openInspection(t, d.cfg.PinPath)
	got, err := in.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	want, err := d.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || len(got) != 2 {
		t.Errorf("inspected endpoints %+v, the dataplane has %+v", got, want)
	}
	for _, ifindex := range []int{inArray, beyond} {
		gotCounters, err := in.Counters(ifindex)
		if err != nil {
			t.Fatal(err)
		}
		wantCounters, err := d.Counters(ifindex)
		if err != nil {
			t.Fatal(err)
		}
		if gotCounters != wantCounters {
			t.Errorf("ifindex %d: inspected counters %+v, the dataplane counts %+v", ifindex, gotCounters, wantCounters)
		}
	}
	c, _ := in.Counters(beyond)
	if c.Ingress.AllowPackets != 2 || c.Ingress.DenyPackets != 1 || c.Egress.AllowPackets != 0 || c.Egress.DenyPackets != 1 {
		t.Errorf("counters of ifindex %d: %+v, want 2 allowed and 1 denied in, 1 denied out", beyond, c)
	}

	for ifindex, ep := range map[int]*policy.Endpoint{inArray: webPolicy(), beyond: inspectedPolicy()} {
		tables, err := in.Tables(ifindex)
		if err != nil {
			t.Fatal(err)
		}
		for dir := range 2 {
			compiled, err := compile.Compile(ep.Of(policy.Dir(dir)))
			if err != nil {
				t.Fatal(err)
			}
			if want := CanonicalTables(compiled); !reflect.DeepEqual(tables[dir], want) {
				t.Errorf("ifindex %d %v: inspected tables %+v, compiled %+v", ifindex, policy.Dir(dir), tables[dir], want)
			}
		}
	}
	tables, _ := in.Tables(beyond)
	if n := len(tables[policy.Ingress].Portsets); n != 2 {
		t.Errorf("ingress of ifindex %d has %d port sets, want an inline one and a shared one", beyond, n)
	}
}

// A direction that is not isolated has no tables; the tables read after a
// replacement are the new policy's.
func TestInspectTablesFollowReplacement(t *testing.T) {
	d := newDataplane(t, Config{})
	ifindex := dummyLink(t)
	ingressOnly := &policy.Endpoint{Ingress: inspectedPolicy().Ingress}
	if _, err := d.SetPolicy(ifindex, ingressOnly); err != nil {
		t.Fatal(err)
	}
	tables, err := openInspection(t, d.cfg.PinPath).Tables(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	if tables[policy.Ingress] == nil || len(tables[policy.Ingress].CIDRs) == 0 || tables[policy.Egress] != nil {
		t.Fatalf("tables of an ingress-only policy: %+v", tables)
	}
	if _, err := d.SetPolicy(ifindex, webPolicy()); err != nil {
		t.Fatal(err)
	}
	tables, err = openInspection(t, d.cfg.PinPath).Tables(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	compiled, err := compile.Compile(&webPolicy().Egress)
	if err != nil {
		t.Fatal(err)
	}
	if want := CanonicalTables(compiled); !reflect.DeepEqual(tables[policy.Egress], want) {
		t.Errorf("egress after replacement: %+v, want %+v", tables[policy.Egress], want)
	}
}

func TestInspectWithoutStateSaysWhere(t *testing.T) {
	dir := t.TempDir()
	_, err := Inspect(dir)
	if err == nil || !strings.Contains(err.Error(), "no dataplane state at "+dir) {
		t.Errorf("Inspect of an empty directory: %v, want no dataplane state", err)
	}
}

func TestInspectUnknownIfindexIsAnError(t *testing.T) {
	d := newDataplane(t, Config{})
	in := openInspection(t, d.cfg.PinPath)
	if _, err := in.Tables(dummyLink(t)); err == nil {
		t.Error("tables of an unprogrammed ifindex: no error")
	}
	if _, err := in.Counters(dummyLink(t)); err == nil {
		t.Error("counters of an unprogrammed ifindex: no error")
	}
	if eps, err := in.Endpoints(); err != nil || len(eps) != 0 {
		t.Errorf("endpoints of an empty dataplane: %+v, %v", eps, err)
	}
}

// The inspection's map handles cannot write: a running agent's state is
// safe from it.
func TestInspectOpensMapsReadOnly(t *testing.T) {
	d := newDataplane(t, Config{})
	in := openInspection(t, d.cfg.PinPath)
	if err := in.pinned.objs.EndpointRefs.Update(uint32(1), uint32(1), 0); err == nil {
		t.Error("the inspection wrote to endpoint_refs")
	}
}

// Entries no dataplane writes are reported, not decoded into tables.
func TestDecodeCIDREntryRejectsCorruptEntries(t *testing.T) {
	good := cidrKeyOf(netip.MustParsePrefix("10.0.0.0/8"))
	short := good
	short.Prefixlen = cidrKeyBits - 1
	for name, c := range map[string]struct {
		key   palisadeCidrKey
		value palisadeCidrValue
	}{
		"too many inline ports":   {good, palisadeCidrValue{InlineCount: 3}},
		"missing shared port set": {good, palisadeCidrValue{Portset: 9}},
		"prefix shorter than tag": {short, palisadeCidrValue{}},
	} {
		if _, err := decodeCIDREntry(c.key, c.value, map[uint32][]compile.PortEntry{}, &compile.Direction{}); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	entry, err := decodeCIDREntry(good, palisadeCidrValue{Flags: cidrAnyProto, AnyRule: 7}, nil, &compile.Direction{})
	want := compile.CIDREntry{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Portset: -1, AnyProtocol: true, AnyRule: 7}
	if err != nil || entry != want {
		t.Errorf("decoded %+v (%v), want %+v", entry, err, want)
	}
}

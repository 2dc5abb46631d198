package dataplane

import (
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// TestIfindexesBeyondTheArray programs one endpoint whose ifindex is inside
// the ifindex array (loopback, 1) and one beyond it (a veth, through the
// hash), replaces, reopens and removes them.
func TestIfindexesBeyondTheArray(t *testing.T) {
	d := newDataplane(t, Config{IfindexArraySize: 2})
	cfg := d.cfg
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

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reopened.Close() }) // newDataplane's cleanup purges the pin path
	d = reopened
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

package netpolcases

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/palisade-net/palisade/test/reachability"
)

// testIPs gives every pod of the cluster an address like the e2e suite does.
func testIPs() map[string]netip.Addr {
	ips := map[string]netip.Addr{}
	for i, ns := range Namespaces {
		for j, name := range PodNames {
			ips[ns+"/"+name] = netip.AddrFrom4([4]byte{10, 244, byte(128 + i), byte(10 + j)})
		}
	}
	return ips
}

func TestThereAreTheUpstream48Cases(t *testing.T) {
	cases := All()
	if len(cases) != 48 {
		t.Fatalf("%d cases, want 48", len(cases))
	}
	counts := map[string]int{}
	for _, c := range cases {
		counts[c.Context]++
		if (c.Context == "SCTP") != (c.SkipReason != "") {
			t.Errorf("case %d (%s): skip reason %q", c.Number, c.Context, c.SkipReason)
		}
	}
	if counts["TCP"] != 42 || counts["UDP"] != 3 || counts["SCTP"] != 3 {
		t.Errorf("contexts %v, want TCP 42, UDP 3, SCTP 3", counts)
	}
}

// Every hand-written expectation must agree with an independent evaluation
// of the policies: this catches a mistyped matrix or policy in the port.
func TestExpectationsAgreeWithTheOracle(t *testing.T) {
	ips := testIPs()
	ip := func(pod string) netip.Addr {
		a, ok := ips[pod]
		if !ok {
			t.Fatalf("no pod %s", pod)
		}
		return a
	}
	checked := 0
	for _, c := range All() {
		t.Run(fmt.Sprintf("%02d-%s", c.Number, c.Context), func(t *testing.T) {
			oracle := NewOracle(ips)
			for s, step := range c.Steps(ip) {
				for _, action := range step.Actions {
					if err := oracle.Apply(action); err != nil {
						t.Fatalf("step %d: %v", s+1, err)
					}
				}
				if len(step.Checks) == 0 {
					t.Fatalf("step %d checks nothing", s+1)
				}
				for _, check := range step.Checks {
					predicted, err := oracle.Matrix(c.Pods, check.Port, check.Protocol)
					if err != nil {
						t.Fatal(err)
					}
					if diffs, err := check.Expected.Differences(predicted); err != nil || len(diffs) > 0 {
						t.Errorf("step %d: %s", s+1, reachability.Compare(fmt.Sprintf("%d/%s hand-written vs oracle", check.Port, check.Protocol), check.Expected, predicted))
					}
					checked++
				}
			}
		})
	}
	t.Logf("%d checks agree", checked)
}

// The oracle itself must see policies: a deny-all changes its answer.
func TestOracleDeniesWhatADenyAllPolicyDenies(t *testing.T) {
	oracle := NewOracle(testIPs())
	if ok, _ := oracle.Allowed("y/a", "x/a", 80, tcp); !ok {
		t.Fatal("denied without any policy")
	}
	if err := oracle.Apply(create(newPolicy("x", "deny", selectAll(), ingress()))); err != nil {
		t.Fatal(err)
	}
	if ok, _ := oracle.Allowed("y/a", "x/a", 80, tcp); ok {
		t.Fatal("allowed through a deny-all ingress policy")
	}
	if ok, _ := oracle.Allowed("x/a", "y/a", 80, tcp); !ok {
		t.Fatal("ingress deny-all in x denied egress from x")
	}
}

package reachability

import (
	"strings"
	"testing"
)

func TestOverridesApplyInOrder(t *testing.T) {
	pods := []string{"x/a", "x/b", "y/a"}
	m := New(pods, true)
	m.SetPeers(Peer{}, Peer{Namespace: "x"}, false)
	m.Set("x/b", "x/a", true)
	want := map[Pair]bool{
		{"x/a", "x/b"}: false, {"x/a", "y/a"}: true,
		{"x/b", "x/a"}: true, {"x/b", "y/a"}: true,
		{"y/a", "x/a"}: false, {"y/a", "x/b"}: false,
	}
	for pair, allowed := range want {
		if got := m.Get(pair.From, pair.To); got != allowed {
			t.Errorf("%s -> %s = %v, want %v", pair.From, pair.To, got, allowed)
		}
	}
}

func TestAllIngressAndEgress(t *testing.T) {
	m := New([]string{"x/a", "x/b", "y/a"}, true)
	m.SetAllIngress("x/a", false)
	m.SetAllEgress("y/a", false)
	for _, from := range m.Pods() {
		for _, to := range m.Pods() {
			want := to != "x/a" && from != "y/a"
			if got := m.Get(from, to); got != want {
				t.Errorf("%s -> %s = %v, want %v", from, to, got, want)
			}
		}
	}
}

func TestDifferencesIgnoreLoopback(t *testing.T) {
	expected := New([]string{"x/a", "x/b"}, true)
	observed := expected.Clone()
	observed.Set("x/a", "x/a", false)
	if diffs, err := expected.Differences(observed); err != nil || len(diffs) != 0 {
		t.Fatalf("loopback compared: %v %v", diffs, err)
	}
	observed.Set("x/b", "x/a", false)
	diffs, err := expected.Differences(observed)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || diffs[0] != (Pair{"x/b", "x/a"}) {
		t.Fatalf("differences = %v, want [x/b -> x/a]", diffs)
	}
	if expected.Get("x/b", "x/a") != true {
		t.Fatal("Clone shares storage with its original")
	}
}

func TestDifferentPodsAreAnError(t *testing.T) {
	if _, err := New([]string{"x/a"}, true).Differences(New([]string{"x/b"}, true)); err == nil {
		t.Fatal("comparing matrices over different pods succeeded")
	}
}

func TestCompareMarksWrongCells(t *testing.T) {
	expected := New([]string{"x/a", "y/a"}, true)
	expected.Set("y/a", "x/a", false)
	observed := New([]string{"x/a", "y/a"}, true)
	out := Compare("80/TCP", expected, observed)
	for _, want := range []string{"1 of 2 pairs wrong", ".!", "y/a -> x/a: expected blocked, observed connected"} {
		if !strings.Contains(out, want) {
			t.Errorf("printout lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "!") != 2 { // the legend and the one wrong cell
		t.Errorf("printout marks other cells:\n%s", out)
	}
}

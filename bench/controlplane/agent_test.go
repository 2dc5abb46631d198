package controlplane

import (
	"time"

	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/palisade-net/palisade/dataplane"
)

func openDataplane(t *testing.T) *dataplane.Dataplane {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: BPF")
	}
	d, err := dataplane.Open(dataplane.Config{PinPath: filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-cp-test-%d", os.Getpid())), ConntrackSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Purge(); err != nil {
			t.Errorf("purge: %v", err)
		}
	})
	return d
}

func TestAgentProgramsANodeOf250Pods(t *testing.T) {
	pes, err := NodeObjects(250)
	if err != nil {
		t.Fatal(err)
	}
	d := openDataplane(t)
	out, err := MeasureAgentNode(d, pes)
	if err != nil {
		t.Fatal(err)
	}
	if out.Pods < 200 || out.Pods > 250 || out.Rules == 0 || out.PerPod <= 0 {
		t.Fatalf("node of 250 pods: %+v", out)
	}
	states, err := d.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != out.Pods {
		t.Fatalf("%d endpoints programmed, want %d", len(states), out.Pods)
	}
	t.Logf("%+v", out)
}

func TestLargePolicyIsProgrammedWhole(t *testing.T) {
	d := openDataplane(t)
	convert, program, err := MeasureLargePolicy(d, 10000, 1)
	if err != nil {
		t.Fatal(err)
	}
	if convert <= 0 || program <= 0 {
		t.Fatalf("convert %v program %v", convert, program)
	}
	// Removed policies are freed in the background, after running programs finish.
	deadline := time.Now().Add(5 * time.Second)
	for {
		usage, err := d.Occupancy()
		if err != nil {
			t.Fatal(err)
		}
		if usage["cidr_rules"].Used == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d CIDR entries left 5 s after removing the measured policies", usage["cidr_rules"].Used)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("convert %v, program %v", convert, program)
}

func TestResidentBytes(t *testing.T) {
	rss, peak, err := ResidentBytes()
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || peak < rss {
		t.Fatalf("rss %d peak %d", rss, peak)
	}
}

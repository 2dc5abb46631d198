package passthrough

import (
	"os"
	"testing"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

func TestPassesEveryFrame(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	prog, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	frame := packet.Build(packet.Spec{Protocol: policy.TCP})
	ret, perRun, err := prog.Benchmark(frame, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ret != 0 {
		t.Fatalf("returned %d, want TC_ACT_OK (0)", ret)
	}
	if perRun <= 0 {
		t.Fatalf("per-run time %v", perRun)
	}
}

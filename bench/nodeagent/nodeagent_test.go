package nodeagent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAgentMemoryOnASmallNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, BPF")
	}
	if testing.Short() {
		t.Skip("builds the binaries and starts a kube-apiserver")
	}
	home, _ := os.UserHomeDir()
	if _, err := os.Stat(filepath.Join(home, ".cache/palisade/assets/kube-apiserver")); err != nil && os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("no kube-apiserver: run make testenv")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := Measure(ctx, t.TempDir(), 20, 4)
	if err != nil {
		t.Fatal(err)
	}
	if out.Objects == 0 || out.RSS < 10<<20 || out.PeakRSS < out.RSS {
		t.Fatalf("outcome %+v", out)
	}
	if _, err := agentPID("palisade-" + Prefix + "-node-1"); err == nil {
		t.Fatal("the agent still runs after Measure")
	}
	t.Logf("%+v", out)
}

package main

import (
	"net/netip"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/test/netpolcases"
)

// The example policies parse and mean what their comments say, for the
// demo's pods.
func TestExamplePoliciesMeanWhatTheySay(t *testing.T) {
	policies, files, err := readPolicies("../../deploy/examples")
	if err != nil {
		t.Fatal(err)
	}
	if len(policies) != 5 || len(files) != 5 {
		t.Fatalf("%d policies from %v, want 5", len(policies), files)
	}
	podIPs := map[string]netip.Addr{}
	podLabels := map[string]map[string]string{}
	for _, p := range demoPods {
		key := p.namespace + "/" + p.name
		podIPs[key] = netip.MustParseAddr(p.ip)
		podLabels[key] = map[string]string{"app": p.app}
	}
	oracle := netpolcases.NewOracleWithLabels(podIPs, podLabels, namespaceLabels, containerPorts)
	for _, p := range policies {
		if err := oracle.Apply(netpolcases.Action{CreatePolicy: p}); err != nil {
			t.Fatal(err)
		}
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	cases := []struct {
		from, to string
		port     int32
		protocol corev1.Protocol
		allowed  bool
	}{
		{"web/frontend", "shop/orders", 80, tcp, true},
		{"web/frontend", "shop/orders", 81, tcp, false},
		{"web/frontend", "shop/orders", 80, udp, false},
		{"tools/debug", "shop/orders", 80, tcp, false},
		{"web/frontend", "shop/payments", 80, tcp, false},
		{"shop/orders", "shop/payments", 80, tcp, true},
		{"shop/orders", "data/db", 81, tcp, true},
		{"shop/payments", "data/db", 81, tcp, true},
		{"shop/orders", "data/db", 80, tcp, false},
		{"web/frontend", "data/db", 81, tcp, false},
		{"data/db", "web/frontend", 80, tcp, false},
		{"tools/debug", "data/db", 81, tcp, false},
		{"tools/debug", "web/frontend", 80, tcp, true},
		{"web/frontend", "tools/debug", 80, udp, true},
	}
	for _, c := range cases {
		got, err := oracle.Allowed(c.from, c.to, c.port, c.protocol)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.allowed {
			t.Errorf("%s -> %s %d/%s: allowed=%v, want %v", c.from, c.to, c.port, c.protocol, got, c.allowed)
		}
	}
}

func TestReadPoliciesRejectsOtherObjects(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: y\n")
	if _, _, err := readPolicies(dir); err == nil {
		t.Fatal("a ConfigMap was accepted as a NetworkPolicy")
	}
	if _, _, err := readPolicies(t.TempDir()); err == nil {
		t.Fatal("an empty directory was accepted")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

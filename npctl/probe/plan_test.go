package probe

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/npctl/manifest"
)

func TestParsePort(t *testing.T) {
	good := map[string]Port{
		"80":         {corev1.ProtocolTCP, 80},
		"53/udp":     {corev1.ProtocolUDP, 53},
		"65535/SCTP": {corev1.ProtocolSCTP, 65535},
	}
	for s, want := range good {
		if got, err := ParsePort(s); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "65536", "http", "80/ICMP", "80/", "-1"} {
		if p, err := ParsePort(s); err == nil {
			t.Errorf("ParsePort(%q) = %v, want an error", s, p)
		}
	}
}

const pods = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080}, {containerPort: 53, protocol: UDP}, {containerPort: 80}, {containerPort: 80}]}]}
status: {podIPs: [{ip: "fd00::1"}, {ip: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: v6, namespace: b}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 443}]}]}
status: {podIP: "fd00::3"}
---
apiVersion: v1
kind: Pod
metadata: {name: node-exporter, namespace: b}
spec: {hostNetwork: true, containers: [{name: c, image: i, ports: [{containerPort: 9100}]}]}
status: {podIP: 192.168.0.1}
`

func plan(t *testing.T, opts Options) []string {
	t.Helper()
	objs, err := manifest.Load("pods.yaml", strings.NewReader(pods))
	if err != nil {
		t.Fatal(err)
	}
	probes, err := Plan(objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range probes {
		out = append(out, p.String())
	}
	return out
}

func TestPlan(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		want []string
	}{
		{"declared ports, shared family, no self, no host network", Options{}, []string{
			"a/client (10.0.0.2) -> a/web (10.0.0.1) TCP/80",
			"a/client (10.0.0.2) -> a/web (10.0.0.1) TCP/8080",
			"a/client (10.0.0.2) -> a/web (10.0.0.1) UDP/53",
			"a/web (fd00::1) -> b/v6 (fd00::3) TCP/443",
			"b/v6 (fd00::3) -> a/web (fd00::1) TCP/80",
			"b/v6 (fd00::3) -> a/web (fd00::1) TCP/8080",
			"b/v6 (fd00::3) -> a/web (fd00::1) UDP/53",
		}},
		{"IPv4 only", Options{Family: 4}, []string{
			"a/client (10.0.0.2) -> a/web (10.0.0.1) TCP/80",
			"a/client (10.0.0.2) -> a/web (10.0.0.1) TCP/8080",
			"a/client (10.0.0.2) -> a/web (10.0.0.1) UDP/53",
		}},
		{"IPv6 only", Options{Family: 6}, []string{
			"a/web (fd00::1) -> b/v6 (fd00::3) TCP/443",
			"b/v6 (fd00::3) -> a/web (fd00::1) TCP/80",
			"b/v6 (fd00::3) -> a/web (fd00::1) TCP/8080",
			"b/v6 (fd00::3) -> a/web (fd00::1) UDP/53",
		}},
		{"chosen ports and protocol filter", Options{From: []string{"a/client"}, Ports: []Port{{corev1.ProtocolUDP, 5353}, {corev1.ProtocolTCP, 1}}, Protocols: []corev1.Protocol{corev1.ProtocolUDP}}, []string{
			"a/client (10.0.0.2) -> a/web (10.0.0.1) UDP/5353",
		}},
		{"namespace patterns", Options{From: []string{"b"}, To: []string{"a"}}, []string{
			"b/v6 (fd00::3) -> a/web (fd00::1) TCP/80",
			"b/v6 (fd00::3) -> a/web (fd00::1) TCP/8080",
			"b/v6 (fd00::3) -> a/web (fd00::1) UDP/53",
		}},
	}
	for _, c := range cases {
		got := plan(t, c.opts)
		if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%s:\ngot\n  %s\nwant\n  %s", c.name, strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
		}
	}
}

func TestPlanRejectsUnknownPodsAndFamilies(t *testing.T) {
	objs, err := manifest.Load("pods.yaml", strings.NewReader(pods))
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{From: []string{"a/nobody"}}, {To: []string{"b/node-exporter"}}, {Family: 5}} {
		if _, err := Plan(objs, opts); err == nil {
			t.Errorf("Plan(%+v): no error", opts)
		}
	}
}

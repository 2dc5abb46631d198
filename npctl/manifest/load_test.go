package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const twoPods = `# leading comment document
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec: {containers: [{name: c, image: i}]}
status: {podIP: "::ffff:10.0.0.2"}
`

func TestLoadFilesAndStdin(t *testing.T) {
	dir := t.TempDir()
	pods := write(t, dir, "pods.yaml", twoPods)
	policy := `{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}}}`
	objs, err := LoadFiles([]string{pods, Stdin}, strings.NewReader(policy))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Pods) != 2 || len(objs.NetworkPolicies) != 1 {
		t.Fatalf("%d pods and %d policies, want 2 and 1", len(objs.Pods), len(objs.NetworkPolicies))
	}
	if got := objs.Pods[1].Namespace; got != "default" {
		t.Errorf("pod b namespace %q, want default", got)
	}
	if got := objs.SourceOf("Pod", "default", "b"); got != pods+": document 3" {
		t.Errorf("pod b source %q, want %s: document 3 (the comment-only document counts, the empty one does not)", got, pods)
	}
	if got := objs.SourceOf("NetworkPolicy", "x", "p"); got != "-: document 1" {
		t.Errorf("policy source %q", got)
	}
	ips, err := PodIPs(&objs.Pods[1])
	if err != nil || len(ips) != 1 || ips[0].String() != "10.0.0.2" {
		t.Errorf("pod b IPs %v, %v: want the IPv4-mapped address unmapped", ips, err)
	}
}

// Every error of every file is reported at once.
func TestErrorsOfSeveralFilesAreAllReported(t *testing.T) {
	dir := t.TempDir()
	a := write(t, dir, "a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
	b := write(t, dir, "b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.0.0.300, ports: [{port: 80, protocol: ICMP}]}\n")
	c := write(t, dir, "c.yaml", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{addresses: [\"fd00::1\"]}]\n")
	_, err := LoadFiles([]string{a, b, c}, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"a.yaml: document 1: ConfigMap \"cm\": unknown kind ConfigMap",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Validation runs once the files parse: fix a.yaml and the other two report.
	write(t, dir, "a.yaml", "")
	_, err = LoadFiles([]string{a, b, c}, nil)
	for _, want := range []string{
		`b.yaml: document 1: Service default/s: clusterIP "10.0.0.300" is not an IP address`,
		`b.yaml: document 1: Service default/s: ports[0]: protocol "ICMP" is not TCP, UDP or SCTP`,
		"c.yaml: document 1: EndpointSlice default/e: endpoints[0]: address fd00::1 is not of addressType IPv4",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestPolicyValidation(t *testing.T) {
	doc := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: app, operator: Like, values: [a]}]}
  policyTypes: [Ingress, Sideways]
  ingress:
  - from:
    - ipBlock: {cidr: "fd00::/64", except: [10.0.0.0/8]}
      podSelector: {}
    - {}
    ports:
    - {port: 0}
    - {port: http, endPort: 90}
    - {port: 100, endPort: 90}
    - {protocol: ICMP}
`
	_, err := Load("p.yaml", strings.NewReader(doc))
	if err == nil {
		t.Fatal("no error")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("error %T is not a list", err)
	}
	for _, want := range []string{
		"p.yaml: document 1: NetworkPolicy x/bad: spec.podSelector:",
		`spec.policyTypes: "Sideways" is not Ingress or Egress`,
		"spec.ingress[0].from[0]: ipBlock cannot be combined with podSelector or namespaceSelector",
		"spec.ingress[0].from[0].ipBlock.except[0] 10.0.0.0/8 is not of the address family of cidr fd00::/64",
		"spec.ingress[0].from[1]: a peer needs podSelector, namespaceSelector or ipBlock",
		"spec.ingress[0].ports[0]: port 0 out of range 1-65535",
		`spec.ingress[0].ports[1]: endPort needs a numeric port, not "http"`,
		"spec.ingress[0].ports[2]: endPort 90 must be between port 100 and 65535",
		`spec.ingress[0].ports[3]: protocol "ICMP" is not TCP, UDP or SCTP`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if n := len(joined.Unwrap()); n != 9 {
		t.Errorf("%d errors, want 9:\n%v", n, err)
	}
}

func TestPodValidation(t *testing.T) {
	doc := `apiVersion: v1
kind: Pod
metadata: {name: a}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 70000}, {containerPort: 80, protocol: ICMP}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: c}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.256}
`
	_, err := Load("pods.yaml", strings.NewReader(doc))
	for _, want := range []string{
		`pods.yaml: document 1: Pod default/a: container "c" ports[0]: containerPort 70000 out of range 1-65535`,
		`pods.yaml: document 1: Pod default/a: container "c" ports[1]: protocol "ICMP" is not TCP, UDP or SCTP`,
		"pods.yaml: document 2: Pod default/b: IP 10.0.0.1 is also the IP of pod default/a",
		`pods.yaml: document 3: Pod default/c: pod IP "10.0.0.256" is not an IP address`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

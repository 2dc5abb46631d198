package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/npctl/bpfengine"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run("npctl", args, IO{In: strings.NewReader(stdin), Out: &out, Err: &errOut})
	return out.String(), errOut.String(), code
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The golden files are the reviewed output of simulate and explain on the
// testdata scenarios; -update rewrites them.
func TestGolden(t *testing.T) {
	const (
		ingress = "testdata/ingress-from-namespace.yaml"
		egress  = "testdata/egress-dns-ipblock.yaml"
		named   = "testdata/named-ports.json"
	)
	cases := []struct {
		name  string
		stdin string
		args  []string
	}{
		{"ingress-matrix", "", []string{"simulate", "-f", ingress}},
		{"ingress-json", "", []string{"simulate", "-f", ingress, "-o", "json"}},
		{"ingress-filtered", "", []string{"simulate", "-f", ingress, "--from", "x", "--to", "y/b", "--port", "80,81,82/UDP"}},
		{"egress-matrix", "", []string{"simulate", "-f", egress}},
		{"egress-stdin-json-udp", readFile(t, egress), []string{"simulate", "-f", "-", "-o", "json", "--protocol", "udp"}},
		{"named-ports-matrix", "", []string{"simulate", "-f", named}},
		{"explain-ingress-denied", "", []string{"explain", "-f", ingress, "--from", "x/a", "--to", "y/b", "--port", "81"}},
		{"explain-ingress-allowed", "", []string{"explain", "-f", ingress, "--from", "x/b", "--to", "y/a", "--port", "80/TCP"}},
		{"explain-selected-not-isolated", "", []string{"explain", "-f", egress, "--from", "default/web", "--to", "default/client", "--port", "9999/UDP"}},
		{"explain-egress-except", "", []string{"explain", "-f", egress, "--from", "default/client", "--to", "default/secret", "--port", "8080"}},
		{"explain-named-port-metrics", "", []string{"explain", "-f", named, "--from", "monitoring/prometheus", "--to", "shop/api", "--port", "9090"}},
		{"rules-ingress", "", []string{"rules", "-f", ingress, "y/b", "x/a"}},
		{"rules-egress", "", []string{"rules", "-f", egress, "default/client"}},
		{"rules-named-ports", "", []string{"rules", "-f", named, "shop/api", "shop/old-api"}},
		{"services-matrix", "", []string{"simulate", "-f", "testdata/services.yaml", "--to-service"}},
		{"services-json", "", []string{"simulate", "-f", "testdata/services.yaml", "--to-service", "-o", "json", "--from", "app/client", "--to", "app"}},
		{"rules-egress-compiled", "", []string{"rules", "-f", egress, "default/client", "--compiled"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if args[0] == "simulate" {
				args = append(args, "--engine", EngineReference)
			}
			stdout, stderr, code := run(t, c.stdin, args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr)
			}
			golden := filepath.Join("testdata", "golden", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := readFile(t, golden); stdout != want {
				t.Errorf("output differs from %s (go test -update to accept):\n--- got\n%s--- want\n%s", golden, stdout, want)
			}
		})
	}
}

func TestSimulateSaysWhichEngineJudges(t *testing.T) {
	_, stderr, code := run(t, "", "simulate", "-f", "testdata/ingress-from-namespace.yaml", "--engine", EngineReference)
	if code != 0 || !strings.Contains(stderr, "verdicts by: reference evaluator") {
		t.Errorf("exit %d, stderr %q: want the reference evaluator named", code, stderr)
	}
}

func TestSimulateWarnsAboutWhatTheControllerWouldReport(t *testing.T) {
	manifest := `apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: a}}
spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - ports: [{port: no-such-port}]
`
	stdout, stderr, code := run(t, manifest, "simulate", "-f", "-", "-o", "json", "--engine", EngineReference)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "warning: -: document 3: NetworkPolicy default/named: UnresolvedNamedPort") {
		t.Errorf("stderr %q: want the unresolved named port reported with its source", stderr)
	}
	if !strings.Contains(stdout, `{"from":"default/b","to":"default/a","port":80,"protocol":"TCP","allowed":false}`) {
		t.Errorf("stdout %s: want b -> a denied (the named port resolves to nothing)", stdout)
	}
}

// Bad manifests fail with the file, the document and the object named.
func TestBadManifests(t *testing.T) {
	cases := []struct {
		file string
		want []string
	}{
		{"unknown-kind.yaml", []string{"unknown-kind.yaml: document 1", `Deployment "shop/web"`, "unknown kind Deployment (apiVersion apps/v1)"}},
		{"invalid-cidr.yaml", []string{"invalid-cidr.yaml: document 1", "NetworkPolicy shop/egress-out", `spec.egress[0].to[0].ipBlock.cidr "10.0.0.0/33" is not a valid CIDR`,
			"spec.egress[1].to[0].ipBlock.except[0] 192.168.0.0/16 is not inside cidr 10.0.0.0/8"}},
		{"pod-without-ip.yaml", []string{"pod-without-ip.yaml: document 1", "Pod shop/pending", "no IP"}},
		{"unknown-field.yaml", []string{"unknown-field.yaml: document 1", `Pod "shop/typo"`, `unknown field "port"`}},
		{"duplicate.yaml", []string{"duplicate.yaml: document 2", "Pod default/twice is defined twice (first at", "duplicate.yaml: document 1)"}},
		{"list-bad-item.yaml", []string{"list-bad-item.yaml: document 1, item 2", `Job "migrate"`, "unknown kind Job"}},
		{"no-kind.yaml", []string{"no-kind.yaml: document 1", `"mystery" has no kind or apiVersion`}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			stdout, stderr, code := run(t, "", "simulate", "-f", filepath.Join("testdata", "bad", c.file), "--engine", EngineReference)
			if code == 0 {
				t.Fatalf("exit 0, stdout:\n%s", stdout)
			}
			if stdout != "" {
				t.Errorf("a failed run printed a result:\n%s", stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	const m = "testdata/ingress-from-namespace.yaml"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"simulate"}, "no manifest given"},
		{[]string{"simulate", "-f", "testdata/missing.yaml"}, "missing.yaml: no such file"},
		{[]string{"simulate", "-f", m, "-o", "yaml"}, `--output "yaml"`},
		{[]string{"simulate", "-f", m, "--port", "http"}, `port "http"`},
		{[]string{"simulate", "-f", m, "--protocol", "icmp"}, `protocol "icmp"`},
		{[]string{"simulate", "-f", m, "--from", "nowhere"}, "--from nowhere: no such pod"},
		{[]string{"simulate", "-f", m, "--engine", "magic"}, `--engine "magic"`},
		{[]string{"explain", "-f", m, "--from", "x/a", "--to", "y/b"}, "--port are required"},
		{[]string{"explain", "-f", m, "--from", "x/a", "--to", "x/a", "--port", "80"}, "the same pod"},
		{[]string{"explain", "-f", m, "--from", "a", "--to", "y/b", "--port", "80"}, "want namespace/name"},
		{[]string{"rules", "-f", m, "y/nobody"}, "no pod y/nobody"},
		{[]string{"rules", "-f", m}, "requires at least 1 arg"},
		{[]string{"node", "endpoints", "--pin-path", "testdata"}, "no dataplane state at testdata"},
	}
	for _, c := range cases {
		_, stderr, code := run(t, "", c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want non-zero and %q", c.args, code, stderr, c.want)
		}
	}
}

func TestKubectlPluginName(t *testing.T) {
	var out bytes.Buffer
	code := Run("/usr/local/bin/kubectl-npctl", []string{"simulate", "--help"}, IO{In: strings.NewReader(""), Out: &out, Err: &out})
	if code != 0 || !strings.Contains(out.String(), "kubectl npctl simulate") {
		t.Errorf("exit %d, help:\n%s\nwant usage as kubectl npctl simulate", code, out.String())
	}
}

// As root, simulate judges with the eBPF programs and prints exactly what
// the reference evaluator printed (the golden files).
func TestBPFEngineMatchesTheGoldenMatrices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	for golden, args := range map[string][]string{
		"ingress-matrix":     {"simulate", "-f", "testdata/ingress-from-namespace.yaml"},
		"egress-matrix":      {"simulate", "-f", "testdata/egress-dns-ipblock.yaml"},
		"named-ports-matrix": {"simulate", "-f", "testdata/named-ports.json"},
		"ingress-json":       {"simulate", "-f", "testdata/ingress-from-namespace.yaml", "-o", "json"},
		"services-matrix":    {"simulate", "-f", "testdata/services.yaml", "--to-service"},
	} {
		stdout, stderr, code := run(t, "", append(args, "--engine", EngineBPF)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if !strings.Contains(stderr, "verdicts by: eBPF programs") || strings.Contains(stderr, "warning") {
			t.Errorf("%v: stderr %q: want the eBPF engine named and no warning (about cleaning up)", args, stderr)
		}
		if want := readFile(t, filepath.Join("testdata", "golden", golden+".golden")); stdout != want {
			t.Errorf("%v with the eBPF engine:\n%s\nreference (golden):\n%s", args, stdout, want)
		}
	}
}

// A named port resolves per destination pod: shop/api serves "http" on 8080
// and shop/old-api on 8000, so the policy admits frontend to 8080 on api
// and to 8000 on old-api, never the other way round.
func TestNamedPortsResolvePerPod(t *testing.T) {
	cases := []struct {
		to, port string
		allowed  bool
	}{
		{"shop/api", "8080", true},
		{"shop/old-api", "8000", true},
		{"shop/api", "8000", false},
		{"shop/old-api", "8080", false},
	}
	for _, c := range cases {
		stdout, stderr, code := run(t, "", "explain", "-f", "testdata/named-ports.json", "--from", "shop/frontend", "--to", c.to, "--port", c.port)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		want := "DENIED"
		if c.allowed {
			want = "ALLOWED"
		}
		if first, _, _ := strings.Cut(stdout, "\n"); !strings.HasSuffix(first, want) {
			t.Errorf("frontend -> %s TCP/%s: want %s, got\n%s", c.to, c.port, want, stdout)
		}
	}
}

// Interrupted, simulate stops with an error and leaves no pinned object.
func TestInterruptedSimulationCleansUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	parent, err := os.MkdirTemp(bpfengine.PinParent, "npctl-cli-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	defer func(saved string) { bpfengine.PinParent = saved }(bpfengine.PinParent)
	bpfengine.PinParent = parent
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	code := RunContext(ctx, "npctl", []string{"simulate", "-f", "testdata/ingress-from-namespace.yaml", "--engine", EngineBPF},
		IO{In: strings.NewReader(""), Out: &out, Err: &errOut})
	if code == 0 || !strings.Contains(errOut.String(), "context canceled") || out.Len() > 0 {
		t.Errorf("exit %d, stdout %q, stderr %q: want a canceled run without result", code, out.String(), errOut.String())
	}
	if left, _ := os.ReadDir(parent); len(left) > 0 {
		t.Errorf("pinned objects left in %s: %v", parent, left)
	}
}

// node endpoints and node rules read the state a simulation left in the
// eBPF engine's pinned maps.
func TestNodeCommandsReadPinnedState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	objs, err := manifest.LoadFiles([]string{"testdata/ingress-from-namespace.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	model, err := simulate.Build(objs)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := bpfengine.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := engine.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if _, err := os.Stat(engine.PinPath()); !os.IsNotExist(err) {
			t.Errorf("pinned objects left at %s", engine.PinPath())
		}
	}()
	probes, err := probe.Plan(objs, probe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := model.Run(engine, probes); err != nil {
		t.Fatal(err)
	}
	ifindex, ok := engine.Ifindex(probe.Pod{Namespace: "y", Name: "b"})
	if !ok {
		t.Fatal("y/b was not programmed")
	}
	stdout, stderr, code := run(t, "", "node", "endpoints", "--pin-path", engine.PinPath())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// y/a and y/b are programmed. y/b's ingress allowed x/a and x/b on 80
	// and denied them on 81 and y/a on both; its open egress passed its 6
	// probes.
	if lines := strings.Split(strings.TrimSpace(stdout), "\n"); len(lines) != 3 || !strings.Contains(lines[0], "REVISION") {
		t.Errorf("want a header and 2 endpoints:\n%s", stdout)
	}
	if !regexp.MustCompile(`(?m)^` + strconv.Itoa(ifindex) + `\s+\S+\s+-\s+\d+\s+\d+\s+isolated\s+open\s+2\s+4\s+6\s+0\s*$`).MatchString(stdout) {
		t.Errorf("no line for ifindex %d with ingress 2 allowed, 4 denied, egress 6 allowed:\n%s", ifindex, stdout)
	}
	stdout, stderr, code = run(t, "", "node", "rules", strconv.Itoa(ifindex), "--pin-path", engine.PinPath())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"ingress: isolated", "10.244.1.10/32       port set 0", "TCP/80               rule 08577837", "egress: not isolated, all allowed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("node rules lacks %q:\n%s", want, stdout)
		}
	}
}

// A Service some of whose backends refuse the source is marked "~": the
// web backends admit client on 8080 only, which is web-1's target port but
// not web-2's.
func TestServiceWithSomeBackendsReachable(t *testing.T) {
	extra := `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-8080-from-client, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: 8080}]
`
	stdout, stderr, code := run(t, readFile(t, "testdata/services.yaml")+extra, "simulate", "-f", "-", "--to-service", "--to", "app/web", "--engine", EngineReference)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"\napp/client    ~\n", "\napp/frontend  X\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("matrix lacks %q:\n%s", want, stdout)
		}
	}
}

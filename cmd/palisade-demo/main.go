// Command palisade-demo runs Palisade on this machine: a local control
// plane, the controller and an agent, a handful of pods as network
// namespaces; it prints who can connect to whom, applies the example
// NetworkPolicies, prints the matrix again next to what the policies mean,
// shows flow log lines, and removes everything (also on Ctrl-C or failure).
// `make demo` runs it through hack/demo.sh. Needs root.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/palisade-net/palisade/agent/flowlog"
	"github.com/palisade-net/palisade/test/localcluster"
	"github.com/palisade-net/palisade/test/netpolcases"
	"github.com/palisade-net/palisade/test/reachability"
)

type demoPod struct {
	namespace, name, app string
	ip                   string
}

// The pods, and the labels of their namespaces. The examples in
// deploy/examples refer to these names, labels and addresses.
var (
	demoPods = []demoPod{
		{"web", "frontend", "frontend", "10.244.200.10"},
		{"shop", "orders", "orders", "10.244.200.20"},
		{"shop", "payments", "payments", "10.244.200.21"},
		{"data", "db", "db", "10.244.200.40"},
		{"tools", "debug", "debug", "10.244.200.50"},
	}
	namespaceLabels = map[string]map[string]string{
		"web":   {"team": "web"},
		"shop":  {"team": "shop"},
		"data":  {"team": "data"},
		"tools": {"team": "tools"},
	}
	containerPorts = []corev1.ContainerPort{
		{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
		{Name: "admin", ContainerPort: 81, Protocol: corev1.ProtocolTCP},
		{Name: "dns", ContainerPort: 80, Protocol: corev1.ProtocolUDP},
	}
)

func main() {
	binDir := flag.String("bin-dir", defaultBinDir(), "directory holding the controller and agent binaries")
	examples := flag.String("examples", "deploy/examples", "directory of NetworkPolicy YAML files to apply")
	keep := flag.Bool("keep-logs", false, "keep the work directory (logs, kubeconfig) after the demo")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "palisade-demo needs root (network namespaces, BPF)")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *binDir, *examples, *keep); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "\ninterrupted; everything was cleaned up")
		} else {
			fmt.Fprintln(os.Stderr, "demo failed:", err)
		}
		os.Exit(1)
	}
}

func defaultBinDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}

func run(ctx context.Context, binDir, examplesDir string, keep bool) (err error) {
	policies, files, err := readPolicies(examplesDir)
	if err != nil {
		return err
	}
	workDir, err := os.MkdirTemp("", "palisade-demo-")
	if err != nil {
		return err
	}
	step("Starting kube-apiserver, etcd, the controller and the agent (work directory %s)", workDir)
	started := time.Now()
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		Prefix:    "pdemo",
		IPv4Range: netip.MustParsePrefix("10.244.200.0/24"),
		BinDir:    binDir,
		WorkDir:   workDir,
	})
	defer func() {
		if err != nil && cluster != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprint(os.Stderr, cluster.Logs(30))
			keep = true
		}
		if cluster != nil {
			step("Cleaning up: stopping processes, deleting pods, routes and pins")
			if closeErr := cluster.Close(); closeErr != nil {
				err = errors.Join(err, closeErr)
			}
		}
		if keep {
			fmt.Printf("logs kept in %s\n", workDir)
		} else {
			os.RemoveAll(workDir)
		}
	}()
	if err != nil {
		return err
	}
	fmt.Printf("  up in %v\n", time.Since(started).Round(100*time.Millisecond))

	step("Creating %d pods as network namespaces, serving 80/TCP (http), 81/TCP (admin), 80/UDP", len(demoPods))
	podIPs := map[string]netip.Addr{}
	podLabels := map[string]map[string]string{}
	var pods []string
	for _, ns := range []string{"web", "shop", "data", "tools"} {
		if err := cluster.CreateNamespace(ctx, ns, namespaceLabels[ns]); err != nil {
			return err
		}
	}
	for _, p := range demoPods {
		key := p.namespace + "/" + p.name
		ip := netip.MustParseAddr(p.ip)
		labels := map[string]string{"app": p.app}
		netPod, err := cluster.AddPod(ctx, localcluster.PodSpec{Namespace: p.namespace, Name: p.name, Labels: labels, IPv4: ip, Ports: containerPorts})
		if err != nil {
			return err
		}
		fmt.Printf("  %-15s %-14s netns %s, host veth %s\n", key, ip, netPod.NetNSName, netPod.HostVeth)
		pods = append(pods, key)
		podIPs[key] = ip
		podLabels[key] = labels
	}

	checks := []struct {
		port     int32
		protocol corev1.Protocol
	}{{80, corev1.ProtocolTCP}, {81, corev1.ProtocolTCP}, {80, corev1.ProtocolUDP}}

	step("Connectivity without any NetworkPolicy (rows connect to columns; . connected, X blocked)")
	for _, c := range checks {
		if wait, err := cluster.WaitFor(ctx, reachability.New(pods, true), localcluster.IPv4, c.port, c.protocol, time.Now(), 30*time.Second, nil); err != nil {
			return fmt.Errorf("%w\n%s", err, wait.Observed.Table())
		}
		fmt.Printf("\n%d/%s\n%s", c.port, c.protocol, reachability.New(pods, true).Table())
	}

	step("Applying the example policies from %s", examplesDir)
	oracle := netpolcases.NewOracleWithLabels(podIPs, podLabels, namespaceLabels, containerPorts)
	applied := time.Now()
	for i, p := range policies {
		if err := cluster.Client.Create(ctx, p); err != nil {
			return fmt.Errorf("%s: %w", files[i], err)
		}
		if err := oracle.Apply(netpolcases.Action{CreatePolicy: p}); err != nil {
			return err
		}
		fmt.Printf("  %-40s %s/%s\n", files[i], p.Namespace, p.Name)
	}

	step("Connectivity with the policies (observed; ! would mark a pair differing from NetworkPolicy semantics)")
	for _, c := range checks {
		expected, err := oracle.Matrix(pods, c.port, c.protocol)
		if err != nil {
			return err
		}
		wait, err := cluster.WaitFor(ctx, expected, localcluster.IPv4, c.port, c.protocol, applied, 30*time.Second, nil)
		if err != nil {
			return fmt.Errorf("%w\n%s", err, reachability.Compare(fmt.Sprintf("%d/%s", c.port, c.protocol), expected, wait.Observed))
		}
		fmt.Printf("\n%d/%s (as the policies say, %v after they were created)\n%s", c.port, c.protocol, wait.Took.Round(time.Millisecond), wait.Observed.Table())
	}

	step("A few flow log lines (%s)", cluster.FlowLogPath)
	showFlowLog(cluster.FlowLogPath, 8)
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

// readPolicies decodes every NetworkPolicy of the YAML files in dir, in
// file name order.
func readPolicies(dir string) ([]*networkingv1.NetworkPolicy, []string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, nil, err
	}
	if len(matches) == 0 {
		return nil, nil, fmt.Errorf("no *.yaml in %s (run from the repository root or pass --examples)", dir)
	}
	sort.Strings(matches)
	var policies []*networkingv1.NetworkPolicy
	var files []string
	for _, path := range matches {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		decoder := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			p := &networkingv1.NetworkPolicy{}
			if err := decoder.Decode(p); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("%s: %w", path, err)
			}
			if p.Kind == "" {
				continue
			}
			if p.Kind != "NetworkPolicy" || p.Namespace == "" {
				f.Close()
				return nil, nil, fmt.Errorf("%s: want NetworkPolicy objects with a namespace, got %s %q", path, p.Kind, p.Name)
			}
			policies = append(policies, p)
			files = append(files, filepath.Base(path))
		}
		f.Close()
	}
	return policies, files, nil
}

// showFlowLog prints the last denials of the agent's flow log (or the last
// records if nothing was denied), one line each.
func showFlowLog(path string, lines int) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Printf("  (no flow log: %v)\n", err)
		return
	}
	defer f.Close()
	var all, denied []flowlog.Record
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		var r flowlog.Record
		if err := json.Unmarshal(scanner.Bytes(), &r); err != nil {
			continue
		}
		all = append(all, r)
		if r.Verdict == "deny" {
			denied = append(denied, r)
		}
	}
	shown := denied
	if len(shown) == 0 {
		shown = all
	}
	if len(shown) > lines {
		shown = shown[len(shown)-lines:]
	}
	for _, r := range shown {
		arrow := "<-"
		if r.Direction == "egress" {
			arrow = "->"
		}
		fmt.Printf("  %s %-5s %-7s %s/%s (%s) %s %s %d/%s %s\n", r.Time.Format("15:04:05.000"), r.Verdict, r.Direction,
			r.Namespace, r.Pod, r.PodIP, arrow, r.Peer, r.Port, r.Protocol, r.Policy)
	}
	fmt.Printf("  (%d records, %d denials; the raw JSON lines are in the flow log)\n", len(all), len(denied))
}

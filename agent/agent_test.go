package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/palisade-net/palisade/agent"
	"github.com/palisade-net/palisade/agent/flowlog"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/internal/testenv"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/test/podnet"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// fixture is one node: a namespace, a pod network on this host, a
// dataplane pinned in its own directory.
type fixture struct {
	t       *testing.T
	env     *testenv.Env
	ns      string
	node    string
	prefix  string
	network *podnet.Network
	pinPath string
	v4      netip.Prefix
	next    int
}

var fixtureCount int

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	fixtureCount++
	if _, err := os.Stat("/sys/fs/bpf"); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err == nil && st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, ""); err != nil {
			t.Fatalf("mounting bpffs: %v", err)
		}
	}
	f := &fixture{t: t, env: testenv.Shared(t), next: 10}
	f.ns = f.env.Namespace(t)
	f.node = fmt.Sprintf("node-%s", f.ns)
	f.prefix = fmt.Sprintf("pag%d%d", os.Getpid()%100, fixtureCount)
	f.v4 = netip.MustParsePrefix(fmt.Sprintf("100.98.%d.0/24", (os.Getpid()*7+fixtureCount)%250))
	network, err := podnet.New(podnet.Config{Prefix: f.prefix, IPv4Range: f.v4})
	if err != nil {
		t.Fatal(err)
	}
	f.network = network
	t.Cleanup(func() {
		if err := network.Close(); err != nil {
			t.Errorf("closing pod network: %v", err)
		}
	})
	f.pinPath = filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-agenttest-%d-%d", os.Getpid(), fixtureCount))
	t.Cleanup(func() {
		dp, err := dataplane.Open(f.dataplaneConfig())
		if err != nil {
			t.Errorf("reopening dataplane to purge: %v", err)
			return
		}
		if err := dp.Purge(); err != nil {
			t.Errorf("purge: %v", err)
		}
		dp.Close()
	})
	return f
}

func (f *fixture) dataplaneConfig() dataplane.Config {
	return dataplane.Config{PinPath: f.pinPath, ConntrackSize: 4096, RuleCapacity: 256, PortRuleCapacity: 256, MaxEndpoints: 64, FragmentSize: 256, EventRingBytes: 1 << 16}
}

func (f *fixture) openDataplane() *dataplane.Dataplane {
	f.t.Helper()
	dp, err := dataplane.Open(f.dataplaneConfig())
	if err != nil {
		f.t.Fatalf("opening dataplane: %v", err)
	}
	return dp
}

// runningAgent is an agent with its manager and dataplane.
type runningAgent struct {
	agent  *agent.Agent
	dp     *dataplane.Dataplane
	cancel context.CancelFunc
	done   chan error
}

// stop stops the agent and closes its dataplane handles; the pinned state
// stays.
func (r *runningAgent) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		t.Errorf("agent: %v", err)
	}
	r.dp.Close()
}

func (f *fixture) startAgent(mode agent.Mode, options ...func(*agent.Config)) *runningAgent {
	f.t.Helper()
	dp := f.openDataplane()
	mgr, err := ctrl.NewManager(f.env.Config, ctrl.Options{
		Scheme:                 f.env.Scheme,
		Cache:                  agent.CacheOptions(f.node),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 zap.New(zap.UseDevMode(true)),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := agent.Config{
		NodeName:        f.node,
		Mode:            mode,
		InterfacePrefix: f.prefix,
		Log:             zap.New(zap.UseDevMode(true)),
	}
	for _, o := range options {
		o(&cfg)
	}
	a, err := agent.New(mgr, dp, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{agent: a, dp: dp, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- mgr.Start(ctx) }()
	f.t.Cleanup(func() { r.stop(f.t) })
	f.eventually(30*time.Second, func() error {
		if !a.Ready() {
			return errors.New("agent not ready")
		}
		return nil
	})
	return r
}

func (f *fixture) eventually(timeout time.Duration, check func() error) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addPodNet makes a network-namespace pod serving TCP on ports.
func (f *fixture) addPodNet(name string, ports ...uint16) *podnet.Pod {
	f.t.Helper()
	ip := f.v4.Addr()
	for i := 0; i < f.next; i++ {
		ip = ip.Next()
	}
	f.next++
	p, err := f.network.AddPod(f.ns+"/"+name, ip, netip.Addr{})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(ports) > 0 {
		if err := p.Serve(ports, []policy.Protocol{policy.TCP}); err != nil {
			f.t.Fatal(err)
		}
	}
	return p
}

// createPod creates the Pod object on the fixture's node, with its IP in
// status when ip is valid.
func (f *fixture) createPod(name string, labels map[string]string, ip netip.Addr) {
	f.t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: f.node, Containers: []corev1.Container{{Name: "c", Image: "none"}}},
	}
	if err := f.env.Client.Create(ctx, pod); err != nil {
		f.t.Fatal(err)
	}
	if ip.IsValid() {
		f.setPodIP(name, ip)
	}
}

func (f *fixture) setPodIP(name string, ip netip.Addr) {
	f.t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	if err := f.env.Client.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: name}, &pod); err != nil {
		f.t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip.String()
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
	if err := f.env.Client.Status().Update(ctx, &pod); err != nil {
		f.t.Fatal(err)
	}
}

// createPE writes what the controller would: a PolicyEndpoint of policy
// for the fixture's node selecting pods, isolating ingress.
func (f *fixture) createPE(name, policyName string, selector map[string]string, pods map[string]netip.Addr, ingress []v1alpha1.EndpointInfo) *v1alpha1.PolicyEndpoint {
	f.t.Helper()
	pe := &v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: map[string]string{v1alpha1.NodeLabel: f.node, v1alpha1.PolicyNameLabel: policyName}},
		Spec: v1alpha1.PolicyEndpointSpec{
			PodSelector:  &metav1.LabelSelector{MatchLabels: selector},
			PolicyRef:    v1alpha1.PolicyReference{Namespace: f.ns, Name: policyName},
			PodIsolation: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:      ingress,
			NodeName:     f.node,
		},
	}
	for pod, ip := range pods {
		pe.Spec.PodSelectorEndpoints = append(pe.Spec.PodSelectorEndpoints, v1alpha1.PodEndpoint{Namespace: f.ns, Name: pod, PodIP: v1alpha1.NetworkAddress(ip.String())})
	}
	if err := f.env.Client.Create(context.Background(), pe); err != nil {
		f.t.Fatal(err)
	}
	return pe
}

func (f *fixture) programmed(name string) (*metav1.Condition, int64, error) {
	var pe v1alpha1.PolicyEndpoint
	if err := f.env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: name}, &pe); err != nil {
		return nil, 0, err
	}
	c := meta.FindStatusCondition(pe.Status.Conditions, agent.ConditionProgrammed)
	if c == nil || pe.Status.ObservedGeneration != pe.Generation {
		return nil, 0, fmt.Errorf("PolicyEndpoint %s: generation %d not reported (status %+v)", name, pe.Generation, pe.Status)
	}
	return c, pe.Status.ObservedGeneration, nil
}

func tcpPort(port int32) []v1alpha1.Port {
	tcp := corev1.ProtocolTCP
	return []v1alpha1.Port{{Protocol: &tcp, Port: &port}}
}

func reaches(from *podnet.Pod, to *podnet.Pod, port uint16) bool {
	got, err := from.Probe(policy.TCP, netip.AddrPortFrom(to.IPv4, port), 300*time.Millisecond)
	return err == nil && got == to.Name
}

func (f *fixture) expectReach(from, to *podnet.Pod, port uint16, want bool) {
	f.t.Helper()
	f.eventually(10*time.Second, func() error {
		if got := reaches(from, to, port); got != want {
			return fmt.Errorf("%s -> %s:%d reachable %v, want %v", from.Name, to.Name, port, got, want)
		}
		return nil
	})
}

// TestEnforcesPolicyEndpoint: the agent finds the pods' veths by route,
// enforces a PolicyEndpoint, and reports it Programmed.
func TestEnforcesPolicyEndpoint(t *testing.T) {
	f := newFixture(t)
	client, server, other := f.addPodNet("client"), f.addPodNet("server", 8080, 9090), f.addPodNet("other")
	f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
	f.createPod("server", map[string]string{"app": "server"}, server.IPv4)
	f.createPod("other", map[string]string{"app": "other"}, other.IPv4)
	flows := &syncBuffer{}
	a := f.startAgent(agent.Standard, func(c *agent.Config) { c.FlowLog = flowlog.New(flows, 1000) })
	f.expectReach(other, server, 8080, true)

	f.createPE("server-allow", "server-allow", map[string]string{"app": "server"}, map[string]netip.Addr{"server": server.IPv4},
		[]v1alpha1.EndpointInfo{{CIDR: v1alpha1.NetworkAddress(client.IPv4.String()), Ports: tcpPort(8080)}})
	f.eventually(10*time.Second, func() error {
		c, _, err := f.programmed("server-allow")
		if err != nil {
			return err
		}
		if c.Status != metav1.ConditionTrue || c.Reason != agent.ReasonProgrammed {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	f.expectReach(client, server, 8080, true)
	f.expectReach(client, server, 9090, false)
	f.expectReach(other, server, 8080, false)

	eps, err := a.dp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	serverLink := linkIndex(t, server.HostVeth)
	var found bool
	for _, e := range eps {
		if e.Ifindex == serverLink {
			found = e.Isolated[policy.Ingress] && !e.Isolated[policy.Egress] && e.Attached
		}
	}
	if !found {
		t.Fatalf("server's veth %d not isolated on ingress only: %+v", serverLink, eps)
	}

	// The flow log names the pod, the peer and the deciding policy.
	f.eventually(5*time.Second, func() error {
		var sawDeny, sawAllow bool
		for _, line := range strings.Split(flows.String(), "\n") {
			if line == "" {
				continue
			}
			var r flowlog.Record
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				return fmt.Errorf("flow log line %q: %v", line, err)
			}
			if r.Namespace != f.ns || r.Pod != "server" || r.Direction != "ingress" || r.Port != 8080 || r.Protocol != "TCP" {
				continue
			}
			switch {
			case r.Verdict == "deny" && r.Peer == other.IPv4.String() && r.Policy == f.ns+"/server-allow":
				sawDeny = true
			case r.Verdict == "allow" && r.Peer == client.IPv4.String() && r.Policy == f.ns+"/server-allow":
				sawAllow = true
			}
		}
		if !sawDeny || !sawAllow {
			return fmt.Errorf("flow log lacks the denied (%v) or allowed (%v) flow:\n%s", sawDeny, sawAllow, flows.String())
		}
		return nil
	})

	// The denied probes show in the server's counters.
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var denied, allowed float64
	var capacity bool
	for _, fam := range families {
		switch fam.GetName() {
		case "palisade_pod_packets_total":
			for _, m := range fam.GetMetric() {
				l := map[string]string{}
				for _, p := range m.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				if l["namespace"] == f.ns && l["pod"] == "server" && l["direction"] == "ingress" {
					if l["verdict"] == "deny" {
						denied += m.GetCounter().GetValue()
					} else {
						allowed += m.GetCounter().GetValue()
					}
				}
			}
		case "palisade_map_capacity":
			capacity = len(fam.GetMetric()) > 0
		}
	}
	if denied == 0 || allowed == 0 || !capacity {
		t.Fatalf("metrics: server ingress denied %v allowed %v packets, map capacity reported %v", denied, allowed, capacity)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// histogram returns the sample count and sum of a histogram metric.
func histogram(t *testing.T, name string) (uint64, float64) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() == name && len(fam.GetMetric()) == 1 {
			h := fam.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}

func linkIndex(t *testing.T, name string) int {
	t.Helper()
	l, err := netlinkLinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestIsolatesNewPodBeforeItsIPIsKnown: a pod a NetworkPolicy selects is
// isolated as soon as its veth appears, before its IP is in its status and
// before any PolicyEndpoint lists it; the PolicyEndpoint's rules then open
// what the policy allows.
func TestIsolatesNewPodBeforeItsIPIsKnown(t *testing.T) {
	f := newFixture(t)
	client := f.addPodNet("client")
	f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "db"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "db"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if err := f.env.Client.Create(context.Background(), np); err != nil {
		t.Fatal(err)
	}
	a := f.startAgent(agent.Standard)

	enforcedCount, enforcedSum := histogram(t, "palisade_agent_interface_enforced_seconds")
	readyCount, readySum := histogram(t, "palisade_agent_pod_ready_seconds")

	// The scheduler placed the pod; the CNI has not run yet.
	f.createPod("db", map[string]string{"tier": "db"}, netip.Addr{})
	time.Sleep(200 * time.Millisecond) // let the pod reach the agent's cache
	start := time.Now()
	db := f.addPodNet("db", 5432)
	dbLink := linkIndex(t, db.HostVeth)
	f.eventually(5*time.Second, func() error {
		eps, err := a.dp.Endpoints()
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e.Ifindex == dbLink && e.Attached && e.Isolated[policy.Ingress] {
				return nil
			}
		}
		return fmt.Errorf("veth %s not isolated yet", db.HostVeth)
	})
	t.Logf("new veth isolated %v after the pod network was wired", time.Since(start))
	count, sum := histogram(t, "palisade_agent_interface_enforced_seconds")
	if count != enforcedCount+1 {
		t.Fatalf("interface enforcement latency observed %d times, want 1", count-enforcedCount)
	}
	t.Logf("veth appearance to isolation (agent's measure): %.2fms", (sum-enforcedSum)*1000)
	if reaches(client, db, 5432) {
		t.Fatal("client reached the selected pod before any rule allows it")
	}

	// The kubelet reports the IP, the controller lists the pod with its rules.
	f.setPodIP("db", db.IPv4)
	f.createPE("db-x", "db", map[string]string{"tier": "db"}, map[string]netip.Addr{"db": db.IPv4},
		[]v1alpha1.EndpointInfo{{CIDR: v1alpha1.NetworkAddress(client.IPv4.String())}})
	f.expectReach(client, db, 5432, true)
	f.eventually(2*time.Second, func() error {
		if count, sum = histogram(t, "palisade_agent_pod_ready_seconds"); count != readyCount+1 {
			return fmt.Errorf("pod readiness latency observed %d times, want 1", count-readyCount)
		}
		return nil
	})
	t.Logf("veth appearance to allowed traffic (includes this test's steps): %.0fms", (sum-readySum)*1000)
}

// TestInvalidPolicyEndpointFailsClosed: a PolicyEndpoint whose rules cannot
// be converted, and one too big for the dataplane, are reported on their
// status and in an Event; their pods stay closed.
func TestInvalidPolicyEndpointFailsClosed(t *testing.T) {
	f := newFixture(t)
	client, bad, big := f.addPodNet("client"), f.addPodNet("bad", 80), f.addPodNet("big", 80)
	f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
	f.createPod("bad", map[string]string{"app": "bad"}, bad.IPv4)
	f.createPod("big", map[string]string{"app": "big"}, big.IPv4)
	f.startAgent(agent.Standard)
	f.expectReach(client, bad, 80, true)

	// An except of the other address family passes the CRD's validation but
	// has no meaning.
	f.createPE("bad-x", "bad", map[string]string{"app": "bad"}, map[string]netip.Addr{"bad": bad.IPv4},
		[]v1alpha1.EndpointInfo{{CIDR: "0.0.0.0/0", Except: []v1alpha1.NetworkAddress{"fd00::/8"}}})
	// More CIDR entries than the dataplane's 256.
	var many []v1alpha1.EndpointInfo
	for i := 0; i < 300; i++ {
		many = append(many, v1alpha1.EndpointInfo{CIDR: v1alpha1.NetworkAddress(fmt.Sprintf("10.%d.%d.0/24", i/250, i%250))})
	}
	many = append(many, v1alpha1.EndpointInfo{CIDR: v1alpha1.NetworkAddress(client.IPv4.String())})
	f.createPE("big-x", "big", map[string]string{"app": "big"}, map[string]netip.Addr{"big": big.IPv4}, many)

	for name, reason := range map[string]string{"bad-x": agent.ReasonInvalid, "big-x": agent.ReasonProgrammingFailed} {
		f.eventually(10*time.Second, func() error {
			c, _, err := f.programmed(name)
			if err != nil {
				return err
			}
			if c.Status != metav1.ConditionFalse || c.Reason != reason {
				return fmt.Errorf("%s: condition %+v, want False/%s", name, c, reason)
			}
			return nil
		})
		f.eventually(10*time.Second, func() error {
			var events corev1.EventList
			if err := f.env.Client.List(context.Background(), &events); err != nil {
				return err
			}
			for _, e := range events.Items {
				if e.Namespace == f.ns && e.InvolvedObject.Name == name && e.Reason == reason && e.Type == corev1.EventTypeWarning {
					return nil
				}
			}
			return fmt.Errorf("no %s event for %s among %d events", reason, name, len(events.Items))
		})
	}
	c, _, _ := f.programmed("bad-x")
	if !strings.Contains(c.Message, "fd00::/8") {
		t.Errorf("message does not say what is wrong: %q", c.Message)
	}
	f.expectReach(client, bad, 80, false)
	f.expectReach(client, big, 80, false)
}

// echoServer listens inside pod on port and echoes every connection.
func echoServer(t *testing.T, pod *podnet.Pod, port int) {
	t.Helper()
	var listener net.Listener
	if err := pod.InNetNS(func() (err error) {
		listener, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close() })
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()
}

// TestRestartKeepsConnectionsAndRemovesGonePods: a new agent adopts the
// pinned state of the one before: an established connection keeps flowing
// and a denied peer stays denied through the restart, and the state of a
// pod deleted while no agent ran is removed.
func TestRestartKeepsConnectionsAndRemovesGonePods(t *testing.T) {
	f := newFixture(t)
	client, server, other, gone := f.addPodNet("client"), f.addPodNet("server", 8080), f.addPodNet("other"), f.addPodNet("gone")
	moved := f.addPodNet("moved", 8080)
	echoServer(t, server, 7000)
	for _, p := range []struct {
		name string
		pod  *podnet.Pod
	}{{"client", client}, {"server", server}, {"other", other}, {"gone", gone}, {"moved", moved}} {
		f.createPod(p.name, map[string]string{"app": p.name}, p.pod.IPv4)
	}
	allowClient := []v1alpha1.EndpointInfo{{CIDR: v1alpha1.NetworkAddress(client.IPv4.String())}}
	f.createPE("server-x", "server", map[string]string{"app": "server"}, map[string]netip.Addr{"server": server.IPv4}, allowClient)
	f.createPE("gone-x", "gone", map[string]string{"app": "gone"}, map[string]netip.Addr{"gone": gone.IPv4}, allowClient)
	f.createPE("moved-x", "moved", map[string]string{"app": "moved"}, map[string]netip.Addr{"moved": moved.IPv4}, allowClient)

	first := f.startAgent(agent.Standard)
	f.eventually(10*time.Second, func() error { _, _, err := f.programmed("server-x"); return err })
	f.expectReach(client, server, 8080, true)
	f.expectReach(other, server, 8080, false)

	var conn net.Conn
	if err := client.InNetNS(func() (err error) {
		conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(server.IPv4, 7000).String(), time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip := func(i int) error {
		msg := fmt.Sprintf("ping %d\n", i)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	if err := roundTrip(0); err != nil {
		t.Fatal(err)
	}

	// Traffic during the whole restart: the connection must keep working,
	// the denied peer must never get through.
	stopTraffic := make(chan struct{})
	trafficDone := make(chan error, 1)
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stopTraffic:
				trafficDone <- nil
				return
			default:
			}
			if err := roundTrip(i); err != nil {
				trafficDone <- fmt.Errorf("established connection broke at message %d: %w", i, err)
				return
			}
			if reaches(other, server, 8080) {
				trafficDone <- errors.New("denied peer reached the server during the restart")
				return
			}
		}
	}()

	f.expectReach(other, moved, 8080, false)
	goneLink, oldMovedLink := linkIndex(t, gone.HostVeth), linkIndex(t, moved.HostVeth)
	first.stop(t)
	// While no agent runs, the pod "gone" is deleted with its veth.
	if err := f.env.Client.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "gone"}}); err != nil {
		t.Fatal(err)
	}
	if err := netlinkLinkDel(gone.HostVeth); err != nil {
		t.Fatal(err)
	}
	// ...and the pod "moved" gets a new sandbox: a new veth and IP.
	if err := netlinkLinkDel(moved.HostVeth); err != nil {
		t.Fatal(err)
	}
	movedAgain := f.addPodNet("moved-again", 8080)
	f.setPodIP("moved", movedAgain.IPv4)
	time.Sleep(300 * time.Millisecond)
	second := f.startAgent(agent.Standard)
	time.Sleep(500 * time.Millisecond)
	close(stopTraffic)
	if err := <-trafficDone; err != nil {
		t.Fatal(err)
	}
	f.expectReach(other, server, 8080, false)
	f.expectReach(client, server, 8080, true)
	f.eventually(5*time.Second, func() error {
		eps, err := second.dp.Endpoints()
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e.Ifindex == goneLink || e.Ifindex == oldMovedLink {
				return fmt.Errorf("state of the deleted veth %d still programmed", e.Ifindex)
			}
		}
		return nil
	})
	f.expectReach(client, movedAgain, 8080, true)
	f.expectReach(other, movedAgain, 8080, false)
}

// TestStrictModeDeniesUntilPodKnown: in strict mode a new interface is
// denied everything until its pod is known; a pod no policy selects is
// then opened.
func TestStrictModeDeniesUntilPodKnown(t *testing.T) {
	f := newFixture(t)
	client := f.addPodNet("client")
	f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
	f.startAgent(agent.Strict)

	newcomer := f.addPodNet("newcomer", 80)
	f.expectReach(client, newcomer, 80, false)
	f.createPod("newcomer", map[string]string{"app": "newcomer"}, newcomer.IPv4)
	f.expectReach(client, newcomer, 80, true)
}

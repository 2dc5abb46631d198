// Package localcluster runs a whole Palisade cluster on this machine: a
// real kube-apiserver and etcd (internal/testenv), the controller and one
// node agent as real processes, and pods that are network namespaces
// (test/podnet) registered through the API with their IPs in status. The
// end-to-end tests and the demo share it.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/internal/testenv"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/test/podnet"
)

// Options configures Start.
type Options struct {
	// Prefix (at most 5 characters) starts every name the cluster gives:
	// pods' namespaces and links are <Prefix>a... on the first node and
	// <Prefix>b... on the second, the second node is <Prefix>n-node-2, the
	// agents' bpffs directories /sys/fs/bpf/palisade-<Prefix>-<node>.
	Prefix string
	// IPv4Range holds the first node's pods (the host namespace).
	IPv4Range netip.Prefix
	// SecondNodeRange, when valid, adds a second node, a network namespace
	// with its own agent, holding pods of this range.
	SecondNodeRange netip.Prefix
	// IPv6Range and SecondNodeIPv6Range, when valid, make the nodes
	// dual-stack: pods may then have an IPv6 address too.
	IPv6Range, SecondNodeIPv6Range netip.Prefix
	// BinDir holds the controller and agent binaries (see Build).
	BinDir string
	// WorkDir receives the kubeconfig, the logs and the flow logs.
	WorkDir string
	// AgentMode is passed as --mode (default standard).
	AgentMode string
}

// Node names.
const (
	FirstNode  = "node-1"
	SecondNode = "node-2"
)

// node is one simulated machine: the host namespace or a podnet.Node.
type node struct {
	name string
	// podPrefix starts the host-side names of the node's pod interfaces.
	podPrefix string
	network   *podnet.Network
	machine   *podnet.Node // nil for the first node, the host namespace
	hostIP    string
	pinPath   string
	flowLog   string
	apiProxy  io.Closer
	// agent runs the node's agent, started with agentArgs; agentHealth is
	// its /readyz address.
	agent       *process
	agentArgs   []string
	agentHealth string
}

// Cluster is a running local cluster. Close stops and removes everything.
type Cluster struct {
	Options
	ControlPlane *testenv.ControlPlane
	Client       client.Client
	// FlowLogPath is the first node's agent's flow log.
	FlowLogPath string

	lock      *os.File
	nodes     []*node
	mu        sync.Mutex
	pods      map[string]*podnet.Pod
	processes []*process
}

// Start brings up the control plane, the nodes and their pod networks, the
// controller and one agent per node, and waits until all report ready.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.AgentMode == "" {
		opts.AgentMode = "standard"
	}
	if opts.Prefix == "" || len(opts.Prefix) > 5 {
		return nil, fmt.Errorf("localcluster: prefix %q must be 1 to 5 characters", opts.Prefix)
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, err
	}
	c = &Cluster{Options: opts, pods: map[string]*podnet.Pod{}}
	defer func() {
		if err != nil {
			if closeErr := c.Close(); closeErr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, closeErr)
			}
		}
	}()
	// Start sweeps leftovers by name prefix: a second cluster with the same
	// prefix would tear the first apart.
	if c.lock, err = lockPrefix(opts.Prefix); err != nil {
		return c, err
	}
	if err := ensureBPFFS(); err != nil {
		return c, err
	}
	if err := c.addNode(FirstNode, opts.Prefix+"a", opts.IPv4Range, opts.IPv6Range, nil); err != nil {
		return c, err
	}
	if opts.SecondNodeRange.IsValid() {
		machine, err := podnet.NewNode(opts.Prefix+"n", SecondNode,
			validPrefixes(opts.SecondNodeRange, opts.SecondNodeIPv6Range), validPrefixes(opts.IPv4Range, opts.IPv6Range))
		if err != nil {
			return c, err
		}
		if err := c.addNode(SecondNode, opts.Prefix+"b", opts.SecondNodeRange, opts.SecondNodeIPv6Range, machine); err != nil {
			machine.Close()
			return c, err
		}
	}
	c.FlowLogPath = c.nodes[0].flowLog
	c.ControlPlane, err = testenv.StartControlPlane(ctx, testenv.Options{WorkDir: filepath.Join(opts.WorkDir, "controlplane")})
	if err != nil {
		return c, err
	}
	c.Client = c.ControlPlane.Client
	for _, n := range c.nodes {
		if err := c.createNode(ctx, n); err != nil {
			return c, err
		}
	}
	if err := c.startController(ctx); err != nil {
		return c, err
	}
	for _, n := range c.nodes {
		if err := c.startAgent(ctx, n); err != nil {
			return c, err
		}
	}
	return c, nil
}

func validPrefixes(prefixes ...netip.Prefix) []netip.Prefix {
	var valid []netip.Prefix
	for _, p := range prefixes {
		if p.IsValid() {
			valid = append(valid, p)
		}
	}
	return valid
}

func (c *Cluster) addNode(name, podPrefix string, podRange, podIPv6Range netip.Prefix, machine *podnet.Node) error {
	n := &node{
		name:      name,
		podPrefix: podPrefix,
		machine:   machine,
		hostIP:    podRange.Masked().Addr().Next().String(),
		pinPath:   "/sys/fs/bpf/palisade-" + c.Prefix + "-" + name,
		flowLog:   filepath.Join(c.WorkDir, "flows-"+name+".log"),
	}
	c.nodes = append(c.nodes, n)
	if err := os.RemoveAll(n.pinPath); err != nil {
		return fmt.Errorf("removing leftover pins %s: %w", n.pinPath, err)
	}
	config := podnet.Config{Prefix: podPrefix, IPv4Range: podRange, IPv6Range: podIPv6Range}
	if machine != nil {
		config.HostNetNSPath = machine.NetNSPath
	}
	var err error
	n.network, err = podnet.New(config)
	return err
}

func lockPrefix(prefix string) (*os.File, error) {
	path := filepath.Join(os.TempDir(), "palisade-localcluster-"+prefix+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another local cluster with prefix %q is running (lock %s): %w", prefix, path, err)
	}
	return f, nil
}

func ensureBPFFS() error {
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &fs); err == nil && fs.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll("/sys/fs/bpf", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, ""); err != nil {
		return fmt.Errorf("mounting bpffs at /sys/fs/bpf: %w", err)
	}
	return nil
}

func (c *Cluster) createNode(ctx context.Context, n *node) error {
	object := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{corev1.LabelHostname: n.name}}}
	if err := c.Client.Create(ctx, object); err != nil {
		return fmt.Errorf("creating node %s: %w", n.name, err)
	}
	object.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.hostIP}}
	object.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := c.Client.Status().Update(ctx, object); err != nil {
		return fmt.Errorf("setting node %s status: %w", n.name, err)
	}
	return nil
}

func (c *Cluster) startController(ctx context.Context) error {
	return startWithFreePorts(func(metrics, health string) error {
		p, err := startProcess("controller", filepath.Join(c.WorkDir, "controller.log"), nil, filepath.Join(c.BinDir, "controller"),
			"--kubeconfig", c.ControlPlane.KubeconfigPath,
			"--metrics-bind-address", metrics,
			"--health-probe-bind-address", health,
			"--leader-elect=false")
		if err != nil {
			return err
		}
		c.processes = append(c.processes, p)
		return p.waitReady(ctx, health, 60*time.Second)
	})
}

// startAgent starts n's agent inside n's namespace. An agent on the second
// node reaches the apiserver's loopback address through a forwarder
// listening on the same address inside the node.
func (c *Cluster) startAgent(ctx context.Context, n *node) error {
	if n.machine != nil {
		apiserver, err := url.Parse(c.ControlPlane.Config.Host)
		if err != nil {
			return fmt.Errorf("apiserver address %q: %w", c.ControlPlane.Config.Host, err)
		}
		if n.apiProxy, err = forwardIntoNode(n.machine, apiserver.Host); err != nil {
			return err
		}
	}
	return startWithFreePorts(func(metrics, health string) error {
		n.agentHealth = health
		n.agentArgs = []string{
			"--kubeconfig", c.ControlPlane.KubeconfigPath,
			"--node-name", n.name,
			"--pin-path", n.pinPath,
			"--mode", c.AgentMode,
			"--metrics-bind-address", metrics,
			"--health-probe-bind-address", health,
			"--flow-logs", n.flowLog,
			"--interface-prefix", n.podPrefix,
		}
		return c.runAgent(ctx, n)
	})
}

func (c *Cluster) runAgent(ctx context.Context, n *node) error {
	p, err := startProcess("agent "+n.name, filepath.Join(c.WorkDir, "agent-"+n.name+".log"), n.machine, filepath.Join(c.BinDir, "agent"), n.agentArgs...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.processes = append(c.processes, p)
	n.agent = p
	c.mu.Unlock()
	return p.waitReady(ctx, n.agentHealth, 60*time.Second)
}

// AgentProcess is the running agent of the node, to signal it.
func (c *Cluster) AgentProcess(nodeName string) (*os.Process, error) {
	n, err := c.node(nodeName)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.agent == nil {
		return nil, fmt.Errorf("node %s has no agent", nodeName)
	}
	return n.agent.cmd.Process, nil
}

// RestartAgent waits (up to exitTimeout) for the node's agent to exit,
// killed or crashed, then starts it again with the same flags and pin
// path and waits for its /readyz. The new agent's log follows the old's.
func (c *Cluster) RestartAgent(ctx context.Context, nodeName string, exitTimeout time.Duration) error {
	n, err := c.node(nodeName)
	if err != nil {
		return err
	}
	c.mu.Lock()
	old := n.agent
	c.mu.Unlock()
	if old == nil {
		return fmt.Errorf("node %s has no agent", nodeName)
	}
	select {
	case <-old.exited:
	case <-time.After(exitTimeout):
		return fmt.Errorf("%s still running %v after the restart was asked; stop it first", old.name, exitTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	c.processes = slices.DeleteFunc(c.processes, func(p *process) bool { return p == old })
	c.mu.Unlock()
	return c.runAgent(ctx, n)
}

// Logs returns the last lines of the controller's and the agents' logs.
func (c *Cluster) Logs(lines int) string {
	var out string
	for _, p := range c.processes {
		out += fmt.Sprintf("--- %s (%s)\n%s\n", p.name, p.logPath, p.logTail(lines))
	}
	return out
}

// Close stops the processes and the control plane and removes the pods,
// nodes, routes and pins. It tries every step and reports every failure.
func (c *Cluster) Close() error {
	var errs []error
	for i := len(c.processes) - 1; i >= 0; i-- {
		if err := c.processes[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	c.processes = nil
	if c.ControlPlane != nil {
		if err := c.ControlPlane.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
		c.ControlPlane = nil
	}
	for i := len(c.nodes) - 1; i >= 0; i-- {
		n := c.nodes[i]
		if n.apiProxy != nil {
			n.apiProxy.Close()
		}
		if n.network != nil {
			if err := n.network.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if n.machine != nil {
			if err := n.machine.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(n.pinPath); err != nil {
			errs = append(errs, fmt.Errorf("removing pins %s: %w", n.pinPath, err))
		}
	}
	c.nodes = nil
	if c.lock != nil {
		c.lock.Close()
		c.lock = nil
	}
	return errors.Join(errs...)
}

func (c *Cluster) node(name string) (*node, error) {
	if name == "" {
		name = FirstNode
	}
	for _, n := range c.nodes {
		if n.name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no node %q in this cluster", name)
}

// CreateNamespace creates a namespace with labels (the apiserver adds
// kubernetes.io/metadata.name) and its default service account.
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Client.Create(ctx, ns); err != nil {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}
	if err := c.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating service account %s/default: %w", name, err)
	}
	return nil
}

// PodSpec describes a pod to add.
type PodSpec struct {
	Namespace, Name string
	Labels          map[string]string
	IPv4            netip.Addr
	// IPv6 is optional; the node must be dual-stack.
	IPv6 netip.Addr
	// Ports are the container ports, named; the pod serves each TCP and
	// UDP one.
	Ports []corev1.ContainerPort
	// Node is FirstNode (default) or SecondNode.
	Node string
}

// AddPod makes the pod's network namespace, starts its servers, creates
// the Pod on this node and sets its status (Running, Ready, podIP).
func (c *Cluster) AddPod(ctx context.Context, spec PodSpec) (*podnet.Pod, error) {
	key := spec.Namespace + "/" + spec.Name
	n, err := c.node(spec.Node)
	if err != nil {
		return nil, err
	}
	netPod, err := n.network.AddPod(key, spec.IPv4, spec.IPv6)
	if err != nil {
		return nil, err
	}
	if err := serve(netPod, spec.Ports); err != nil {
		return nil, err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels},
		Spec: corev1.PodSpec{
			NodeName:   n.name,
			Containers: []corev1.Container{{Name: "server", Image: "palisade.invalid/podnet-server", Ports: spec.Ports}},
		},
	}
	if err := c.Client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating pod %s: %w", key, err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    n.hostIP,
		HostIPs:   []corev1.HostIP{{IP: n.hostIP}},
		PodIP:     spec.IPv4.String(),
		PodIPs:    podIPs(spec),
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
	if err := c.Client.Status().Update(ctx, pod); err != nil {
		return nil, fmt.Errorf("setting pod %s status: %w", key, err)
	}
	c.mu.Lock()
	c.pods[key] = netPod
	c.mu.Unlock()
	return netPod, nil
}

func podIPs(spec PodSpec) []corev1.PodIP {
	ips := []corev1.PodIP{{IP: spec.IPv4.String()}}
	if spec.IPv6.IsValid() {
		ips = append(ips, corev1.PodIP{IP: spec.IPv6.String()})
	}
	return ips
}

func serve(pod *podnet.Pod, ports []corev1.ContainerPort) error {
	for _, port := range ports {
		var proto []policy.Protocol
		switch port.Protocol {
		case corev1.ProtocolTCP, "":
			proto = append(proto, policy.TCP)
		case corev1.ProtocolUDP:
			proto = append(proto, policy.UDP)
		default:
			continue // SCTP: no sockets on this kernel
		}
		if err := pod.Serve([]uint16{uint16(port.ContainerPort)}, proto); err != nil {
			return err
		}
	}
	return nil
}

// Pod returns the network side of pod "ns/name".
func (c *Cluster) Pod(key string) (*podnet.Pod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[key]
	return p, ok
}

// PodNames lists the pods added, sorted.
func (c *Cluster) PodNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for name := range c.pods {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// DeleteAllPolicies deletes every NetworkPolicy of the namespaces.
func (c *Cluster) DeleteAllPolicies(ctx context.Context, namespaces []string) error {
	for _, ns := range namespaces {
		if err := c.Client.DeleteAllOf(ctx, &networkingv1.NetworkPolicy{}, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("deleting policies of %s: %w", ns, err)
		}
	}
	return nil
}

// SetPodLabels replaces the labels of pod "ns/name".
func (c *Cluster) SetPodLabels(ctx context.Context, namespace, name string, labels map[string]string, merge bool) error {
	pod := &corev1.Pod{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, pod); err != nil {
		return err
	}
	if !merge || pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	for k, v := range labels {
		pod.Labels[k] = v
	}
	return c.Client.Update(ctx, pod)
}

// SetNamespaceLabels replaces (merge=false) or adds to the labels of a
// namespace; kubernetes.io/metadata.name is kept by the apiserver.
func (c *Cluster) SetNamespaceLabels(ctx context.Context, name string, labels map[string]string, merge bool) error {
	ns := &corev1.Namespace{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		return err
	}
	if !merge || ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	return c.Client.Update(ctx, ns)
}

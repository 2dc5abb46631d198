package controlplane

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
	"github.com/palisade-net/palisade/dataplane"
)

// agentIfindexBase numbers the endpoints the agent measurements program;
// SetPolicy needs no interface behind them.
const agentIfindexBase = 1 << 21

// NodeObjects compiles a cluster and keeps the PolicyEndpoints of the
// first nodes holding at least pods pods, as one node's agent would see
// them.
func NodeObjects(pods int) ([]v1alpha1.PolicyEndpoint, error) {
	nodes := (pods + podsPerNode - 1) / podsPerNode
	objects, problems := compile.CompileAll(Cluster(8*pods, 8*pods/10), compile.Options{})
	if len(problems) > 0 {
		return nil, fmt.Errorf("controlplane: synthetic cluster: %v", problems[0])
	}
	var kept []v1alpha1.PolicyEndpoint
	for _, pe := range objects {
		node, ok := strings.CutPrefix(pe.Spec.NodeName, "node-")
		if n, err := strconv.Atoi(node); ok && err == nil && n < nodes {
			kept = append(kept, pe)
		}
	}
	return kept, nil
}

// AgentOutcome is what programming a node's policies cost the agent's
// pipeline (PolicyEndpoints -> policy.Endpoint -> dataplane maps).
type AgentOutcome struct {
	Pods int
	// Convert is policyset.Build over the node's PolicyEndpoints.
	Convert time.Duration
	// PerPod is the median SetPolicy of one pod.
	PerPod time.Duration
	Rules  int // rules of the median pod, both directions
}

// MeasureAgentNode converts the node's objects and programs every policed
// pod into d.
func MeasureAgentNode(d *dataplane.Dataplane, pes []v1alpha1.PolicyEndpoint) (AgentOutcome, error) {
	start := time.Now()
	built, _ := policyset.Build(pes, nil, nil)
	convert := time.Since(start)
	if len(built.Errors) > 0 {
		for k, err := range built.Errors {
			return AgentOutcome{}, fmt.Errorf("controlplane: convert %v: %w", k, err)
		}
	}
	keys := make([]policyset.PodKey, 0, len(built.Endpoints))
	for k := range built.Endpoints {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b policyset.PodKey) int { return strings.Compare(a.String(), b.String()) })
	type sample struct {
		took  time.Duration
		rules int
	}
	samples := make([]sample, 0, len(keys))
	for i, k := range keys {
		ep := built.Endpoints[k]
		start := time.Now()
		if _, err := d.SetPolicy(agentIfindexBase+i, ep); err != nil {
			return AgentOutcome{}, fmt.Errorf("controlplane: program %v: %w", k, err)
		}
		samples = append(samples, sample{time.Since(start), len(ep.Ingress.Rules) + len(ep.Egress.Rules)})
	}
	if len(samples) == 0 {
		return AgentOutcome{}, fmt.Errorf("controlplane: the node's PolicyEndpoints police no pod")
	}
	slices.SortFunc(samples, func(a, b sample) int { return int(a.took - b.took) })
	median := samples[len(samples)/2]
	return AgentOutcome{Pods: len(samples), Convert: convert, PerPod: median.took, Rules: median.rules}, nil
}

// LargePolicy is one PolicyEndpoint isolating one pod's ingress with
// rules distinct /32 peers (every tenth with a port range, as a policy
// with many ipBlocks has).
func LargePolicy(rules int) v1alpha1.PolicyEndpoint {
	tcp := corev1.ProtocolTCP
	pe := v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: "big", Name: "big-" + strconv.Itoa(rules)},
		Spec: v1alpha1.PolicyEndpointSpec{
			PolicyRef:            v1alpha1.PolicyReference{Namespace: "big", Name: "big"},
			PodIsolation:         []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			PodSelectorEndpoints: []v1alpha1.PodEndpoint{{PodIP: "10.250.0.1", Name: "target", Namespace: "big"}},
		},
	}
	for i := range rules {
		addr := netip.AddrFrom4([4]byte{172, byte(16 + i>>16), byte(i >> 8), byte(i)})
		info := v1alpha1.EndpointInfo{CIDR: v1alpha1.NetworkAddress(addr.String() + "/32")}
		if i%10 == 0 {
			port, end := int32(8000+i%1000), int32(8000+i%1000+10)
			info.Ports = []v1alpha1.Port{{Protocol: &tcp, Port: &port, EndPort: &end}}
		}
		pe.Spec.Ingress = append(pe.Spec.Ingress, info)
	}
	return pe
}

// MeasureLargePolicy converts and programs LargePolicy(rules) onto an
// endpoint with no policy, fastest of repeats; the endpoint is cleared
// between repeats so that each programs every rule.
func MeasureLargePolicy(d *dataplane.Dataplane, rules, repeats int) (convert, program time.Duration, err error) {
	pe := LargePolicy(rules)
	const ifindex = agentIfindexBase - 1
	for r := range repeats {
		start := time.Now()
		built, _ := policyset.Build([]v1alpha1.PolicyEndpoint{pe}, nil, nil)
		c := time.Since(start)
		ep := built.Endpoints[policyset.PodKey{Namespace: "big", Name: "target"}]
		if ep == nil || len(ep.Ingress.Rules) != rules {
			return 0, 0, fmt.Errorf("controlplane: a %d-rule PolicyEndpoint converted to %v", rules, ep)
		}
		start = time.Now()
		if _, err := d.SetPolicy(ifindex, ep); err != nil {
			return 0, 0, fmt.Errorf("controlplane: program %d rules: %w", rules, err)
		}
		p := time.Since(start)
		if err := d.RemovePolicy(ifindex); err != nil {
			return 0, 0, fmt.Errorf("controlplane: remove the %d-rule policy: %w", rules, err)
		}
		if r == 0 || c < convert {
			convert = c
		}
		if r == 0 || p < program {
			program = p
		}
	}
	return convert, program, nil
}

// ResidentBytes reads this process's resident set (VmRSS) and its peak
// (VmHWM) from /proc.
func ResidentBytes() (rss, peak int64, err error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	return ParseMemory(string(status))
}

// ParseMemory reads VmRSS and VmHWM, in bytes, from a /proc/<pid>/status
// text.
func ParseMemory(status string) (rss, peak int64, err error) {
	for line := range strings.SplitSeq(status, "\n") {
		field, value, ok := strings.Cut(line, ":")
		if !ok || (field != "VmRSS" && field != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s: %w", line, err)
		}
		if field == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in the process status")
	}
	return rss, peak, nil
}

// Package simulate runs the real controller compiler and the agent's policy
// assembly on manifests, then judges probes with an Engine: the reference
// evaluator or the eBPF programs.
package simulate

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// DefaultNode is given to pods without spec.nodeName: the controller only
// compiles policies for scheduled pods.
const DefaultNode = "npctl-node"

// Model is the compiled state of a set of manifests.
type Model struct {
	Objects *manifest.Objects
	// EndpointSlices are the Services' backends: those given, and offline
	// those the EndpointSlice controller would write for the others.
	EndpointSlices []discoveryv1.EndpointSlice
	// PolicyEndpoints are what the controller would write.
	PolicyEndpoints []v1alpha1.PolicyEndpoint
	// Problems are what the controller would report as events.
	Problems []compile.Problem
	// Policy is what the agents would enforce, for every pod.
	Policy policyset.Result
	// Waiting lists chunk sets whose newest revision is incomplete; their
	// pods are isolated without those rules, as an agent would.
	Waiting []policyset.Waiting
}

// Build compiles objs as the controller would (pods without a node are
// placed on DefaultNode) and assembles each pod's policy as its agent would.
func Build(objs *manifest.Objects) (*Model, error) {
	snapshot := compile.Objects{
		Namespaces:      objs.Namespaces,
		Pods:            make([]corev1.Pod, len(objs.Pods)),
		Services:        objs.Services,
		EndpointSlices:  EndpointSlices(objs),
		NetworkPolicies: objs.NetworkPolicies,
	}
	for i := range objs.Pods {
		pod := objs.Pods[i].DeepCopy()
		if pod.Spec.NodeName == "" {
			pod.Spec.NodeName = DefaultNode
		}
		snapshot.Pods[i] = *pod
	}
	pes, problems := compile.CompileAll(snapshot, compile.Options{})
	m, err := Assemble(objs, pes, problems)
	if err != nil {
		return nil, err
	}
	m.EndpointSlices = snapshot.EndpointSlices
	return m, nil
}

// Assemble builds the model of objs enforcing the given PolicyEndpoints
// (compiled offline, or read from a cluster).
func Assemble(objs *manifest.Objects, pes []v1alpha1.PolicyEndpoint, problems []compile.Problem) (*Model, error) {
	pods := make([]policyset.Pod, 0, len(objs.Pods))
	for _, pod := range objs.Pods {
		pods = append(pods, policyset.Pod{Namespace: pod.Namespace, Name: pod.Name, Labels: pod.Labels})
	}
	m := &Model{Objects: objs, PolicyEndpoints: pes, Problems: problems, EndpointSlices: objs.EndpointSlices}
	m.Policy, m.Waiting = policyset.Build(pes, objs.NetworkPolicies, pods)
	return m, nil
}

// Endpoint returns the policy the pod's agent enforces, nil if no policy
// applies to it.
func (m *Model) Endpoint(p probe.Pod) *policy.Endpoint {
	return m.Policy.Endpoints[policyset.PodKey{Namespace: p.Namespace, Name: p.Name}]
}

// Policies returns the policies applied to a pod, sorted.
func (m *Model) Policies(p probe.Pod) []policyset.PolicyKey {
	return m.Policy.Policies[policyset.PodKey{Namespace: p.Namespace, Name: p.Name}]
}

// Engine judges one frame in one direction of one pod's endpoint.
type Engine interface {
	// Name says which evaluator judges, for the user.
	Name() string
	Judge(pod probe.Pod, ep *policy.Endpoint, dir policy.Dir, frame []byte) (policy.Verdict, error)
	Close() error
}

// Reference is the Engine of the reference evaluator, policy.Evaluate.
type Reference struct{}

func (Reference) Name() string { return "reference evaluator (policy.Evaluate)" }

func (Reference) Judge(_ probe.Pod, ep *policy.Endpoint, dir policy.Dir, frame []byte) (policy.Verdict, error) {
	return policy.Evaluate(ep, dir, frame), nil
}

func (Reference) Close() error { return nil }

// Step is the decision of one side of a connection.
type Step struct {
	Pod probe.Pod
	Dir policy.Dir
	// Policed is false when no policy applies to the pod (all passes).
	Policed bool
	Verdict policy.Verdict
	// Policies applied to the pod.
	Policies []policyset.PolicyKey
}

// Outcome is the result of one probe: allowed iff the source's egress and
// the destination's ingress both allow the first packet.
type Outcome struct {
	probe.Probe
	Allowed bool
	Egress  Step
	Ingress Step
}

// SourcePort is the source port of probe packets.
const SourcePort = 40000

// Frame returns the first packet of a probe's connection (a TCP SYN, or a
// UDP or SCTP packet).
func Frame(p probe.Probe) []byte {
	spec := packet.Spec{Src: p.FromIP, Dst: p.ToIP, SrcPort: SourcePort, DstPort: p.Port.Port}
	switch p.Protocol {
	case corev1.ProtocolUDP:
		spec.Protocol = policy.UDP
	case corev1.ProtocolSCTP:
		spec.Protocol = policy.SCTP
	default:
		spec.Protocol, spec.TCPFlags = policy.TCP, packet.SYN
	}
	return packet.Build(spec)
}

// Run judges every probe with engine.
func (m *Model) Run(engine Engine, probes []probe.Probe) ([]Outcome, error) {
	out := make([]Outcome, 0, len(probes))
	for _, p := range probes {
		o, err := m.Judge(engine, p)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// Judge runs one probe.
func (m *Model) Judge(engine Engine, p probe.Probe) (Outcome, error) {
	frame := Frame(p)
	o := Outcome{Probe: p}
	var err error
	if o.Egress, err = m.step(engine, p.From, policy.Egress, frame); err != nil {
		return o, fmt.Errorf("%s: egress of %s: %w", p, p.From, err)
	}
	if o.Ingress, err = m.step(engine, p.To, policy.Ingress, frame); err != nil {
		return o, fmt.Errorf("%s: ingress of %s: %w", p, p.To, err)
	}
	o.Allowed = o.Egress.Verdict.Allowed && o.Ingress.Verdict.Allowed
	return o, nil
}

func (m *Model) step(engine Engine, pod probe.Pod, dir policy.Dir, frame []byte) (Step, error) {
	s := Step{Pod: pod, Dir: dir, Policies: m.Policies(pod)}
	ep := m.Endpoint(pod)
	if ep == nil {
		s.Verdict = policy.Verdict{Allowed: true, Reason: policy.ReasonNotIsolated}
		return s, nil
	}
	s.Policed = true
	v, err := engine.Judge(pod, ep, dir, frame)
	s.Verdict = v
	return s, err
}

// PodByIP finds the pod that owns an address, for naming peers.
func (m *Model) PodByIP(ip netip.Addr) (probe.Pod, bool) {
	for i := range m.Objects.Pods {
		p := &m.Objects.Pods[i]
		if p.Spec.HostNetwork {
			continue
		}
		ips, _ := manifest.PodIPs(p)
		for _, a := range ips {
			if a == ip {
				return probe.Pod{Namespace: p.Namespace, Name: p.Name}, true
			}
		}
	}
	return probe.Pod{}, false
}

// HasPod reports whether the objects hold the pod.
func (m *Model) HasPod(p probe.Pod) bool {
	for i := range m.Objects.Pods {
		if m.Objects.Pods[i].Namespace == p.Namespace && m.Objects.Pods[i].Name == p.Name {
			return true
		}
	}
	return false
}

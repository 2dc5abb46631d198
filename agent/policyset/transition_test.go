package policyset

import (
	"net/netip"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// agentView replays what the agent does on every change: Assemble with the
// sets enforced before, Compute with the result enforced before.
type agentView struct {
	sets   map[SetKey]Set
	result *Result
}

func (v *agentView) change(pes []v1alpha1.PolicyEndpoint, nps []networkingv1.NetworkPolicy, pods []Pod) Result {
	sets, _ := Assemble(pes, v.sets)
	in := Input{Sets: sets, Pods: pods, Previous: v.result}
	for i := range nps {
		s, err := SelectionOf(&nps[i])
		if err != nil {
			panic(err)
		}
		in.Selections = append(in.Selections, s)
	}
	r := Compute(in)
	v.sets, v.result = sets, &r
	return r
}

var podIP = netip.MustParseAddr("10.9.0.1")

// admits tells whether ep lets peer open a TCP connection to port.
func admits(ep *policy.Endpoint, peer string, port uint16) bool {
	if ep == nil {
		return true
	}
	frame := packet.Build(packet.Spec{Src: netip.MustParseAddr(peer), Dst: podIP, Protocol: policy.TCP, SrcPort: 40000, DstPort: port, TCPFlags: 0x02})
	return policy.Evaluate(ep, policy.Ingress, frame).Allowed
}

func from(cidr string, port int32) []v1alpha1.EndpointInfo {
	return []v1alpha1.EndpointInfo{{CIDR: v1alpha1.NetworkAddress(cidr), Ports: []v1alpha1.Port{{Port: ptr(port)}}}}
}

func namedPolicy(name, app string, namedPort bool) networkingv1.NetworkPolicy {
	np := webPolicy("ns")
	if namedPort {
		np = webPolicy("ns", "http")
	}
	np.Name = name
	np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	return np
}

type expectation struct {
	peer    string
	port    uint16
	admits  bool
	settled bool
}

func expect(t *testing.T, step string, r Result, pod string, checks ...expectation) {
	t.Helper()
	k := PodKey{"ns", pod}
	for _, c := range checks {
		if got := admits(r.Endpoints[k], c.peer, c.port); got != c.admits {
			t.Errorf("%s: %s -> %s:%d admitted %v, want %v (policy %+v)", step, c.peer, pod, c.port, got, c.admits, r.Endpoints[k])
		}
		if r.Settled[k] != c.settled {
			t.Errorf("%s: %s settled %v, want %v", step, pod, r.Settled[k], c.settled)
		}
	}
}

// A set replaced by another of the same policy, the old one's deletion
// seen before the new one's creation (as when a pod's named port
// resolution, hence its set, changes): in between, the pod keeps what the
// old set allowed instead of being isolated with nothing allowed.
func TestReplacingASetKeepsTheOldRulesUntilTheNewOneArrives(t *testing.T) {
	np := []networkingv1.NetworkPolicy{namedPolicy("web", "web", true)}
	pods := []Pod{webPod("p1")}
	var v agentView

	r := v.change([]v1alpha1.PolicyEndpoint{pe("ns", "web", "web-a", nil, ingressOnly, []string{"p1"}, from("10.1.0.0/16", 8080), nil)}, np, pods)
	expect(t, "old set", r, "p1", expectation{"10.1.0.5", 8080, true, true}, expectation{"10.1.0.5", 9090, false, true})

	r = v.change(nil, np, pods)
	expect(t, "old set deleted, new one not seen yet", r, "p1", expectation{"10.1.0.5", 8080, true, false}, expectation{"10.1.0.5", 9090, false, false}, expectation{"192.168.0.1", 8080, false, false})

	r = v.change([]v1alpha1.PolicyEndpoint{pe("ns", "web", "web-b", nil, ingressOnly, []string{"p1"}, from("10.1.0.0/16", 9090), nil)}, np, pods)
	expect(t, "new set", r, "p1", expectation{"10.1.0.5", 9090, true, true}, expectation{"10.1.0.5", 8080, false, true})
}

// A pod relabelled from policy "web" to policy "api": whichever of the
// controller's updates the agent sees first, traffic both policies allow
// flows all along, and once "api" is compiled for the pod only it applies.
func TestRelabelBetweenPoliciesKeepsWhatBothAllow(t *testing.T) {
	nps := []networkingv1.NetworkPolicy{namedPolicy("web", "web", false), namedPolicy("api", "api", false)}
	web := func(pods ...string) v1alpha1.PolicyEndpoint {
		return pe("ns", "web", "web-x", nil, ingressOnly, pods, from("10.1.0.0/16", 80), nil)
	}
	api := pe("ns", "api", "api-x", nil, ingressOnly, []string{"p1"}, from("10.0.0.0/8", 80), nil)
	api.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}
	relabelled := []Pod{{Namespace: "ns", Name: "p1", Labels: map[string]string{"app": "api"}}, webPod("p2")}
	var v agentView

	r := v.change([]v1alpha1.PolicyEndpoint{web("p1", "p2")}, nps, []Pod{webPod("p1"), webPod("p2")})
	expect(t, "before", r, "p1", expectation{"10.1.0.5", 80, true, true}, expectation{"10.2.0.5", 80, false, true})

	r = v.change([]v1alpha1.PolicyEndpoint{web("p1", "p2")}, nps, relabelled)
	expect(t, "relabelled", r, "p1", expectation{"10.1.0.5", 80, true, false}, expectation{"10.2.0.5", 80, false, false})

	r = v.change([]v1alpha1.PolicyEndpoint{web("p2")}, nps, relabelled)
	expect(t, "web no longer lists it, api not compiled yet", r, "p1", expectation{"10.1.0.5", 80, true, false}, expectation{"10.2.0.5", 80, false, false})

	r = v.change([]v1alpha1.PolicyEndpoint{web("p2"), api}, nps, relabelled)
	expect(t, "api compiled", r, "p1", expectation{"10.1.0.5", 80, true, true}, expectation{"10.2.0.5", 80, true, true}, expectation{"192.168.0.1", 80, false, true})
	expect(t, "api compiled", r, "p2", expectation{"10.1.0.5", 80, true, true}, expectation{"10.2.0.5", 80, false, true})
}

// A direction of a running pod that was open, and that a new policy
// isolates, stays open until the controller's rules for the pod arrive
// (closing it at once would drop what the new policy allows); a direction
// the pod's settled policy isolated keeps its rules meanwhile. A new pod,
// with no settled state, is isolated at once.
func TestNewIsolationOfARunningPodWaitsForItsRules(t *testing.T) {
	egressOnly := namedPolicy("out", "web", false)
	egressOnly.Spec.Ingress = nil
	egressOnly.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	out := pe("ns", "out", "out-x", nil, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, []string{"p1"}, nil, from("10.3.0.0/16", 53))
	pods := []Pod{webPod("p1")}
	var v agentView

	r := v.change([]v1alpha1.PolicyEndpoint{out}, []networkingv1.NetworkPolicy{egressOnly}, pods)
	expect(t, "egress policy only", r, "p1", expectation{"10.1.0.5", 80, true, true})

	nps := []networkingv1.NetworkPolicy{egressOnly, webPolicy("ns")}
	r = v.change([]v1alpha1.PolicyEndpoint{out}, nps, pods)
	expect(t, "ingress policy created, not compiled yet", r, "p1", expectation{"10.1.0.5", 80, true, false})
	if ep := r.Endpoints[PodKey{"ns", "p1"}]; ep == nil || !ep.Egress.Isolated || len(ep.Egress.Rules) != 1 {
		t.Errorf("egress rules of the settled policy lost meanwhile: %+v", ep)
	}

	web := pe("ns", "web", "web-x", nil, ingressOnly, []string{"p1"}, from("10.1.0.0/16", 8080), nil)
	r = v.change([]v1alpha1.PolicyEndpoint{out, web}, nps, pods)
	expect(t, "ingress policy compiled", r, "p1", expectation{"10.1.0.5", 80, false, true}, expectation{"10.1.0.5", 8080, true, true})

	r = v.change([]v1alpha1.PolicyEndpoint{out, web}, nps, []Pod{webPod("p1"), webPod("p2")})
	expect(t, "a new pod the policy selects", r, "p2", expectation{"10.1.0.5", 80, false, false})
}

package policyset

import (
	"reflect"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/policy"
)

// webPolicy is the NetworkPolicy "web" (pods app=web) of the pe helper,
// with ingress on numeric port 80 and, given, on named ports.
func webPolicy(ns string, namedPorts ...string) networkingv1.NetworkPolicy {
	port := intstr.FromInt32(80)
	rule := networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}
	for _, name := range namedPorts {
		named := intstr.FromString(name)
		rule.Ports = append(rule.Ports, networkingv1.NetworkPolicyPort{Port: &named})
	}
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{rule},
		},
	}
}

func webPod(name string) Pod {
	return Pod{Namespace: "ns", Name: name, Labels: map[string]string{"app": "web"}}
}

func onPort(port int32) []v1alpha1.EndpointInfo {
	return []v1alpha1.EndpointInfo{{CIDR: "10.1.0.0/16", Ports: []v1alpha1.Port{{Port: ptr(port)}}}}
}

// ingressPorts lists the ports of a pod's ingress rules.
func ingressPorts(ep *policy.Endpoint) []uint16 {
	if ep == nil {
		return nil
	}
	var ports []uint16
	for _, rule := range ep.Ingress.Rules {
		for _, p := range rule.Ports {
			ports = append(ports, p.Port)
		}
	}
	return ports
}

func TestSelectionOfSeesIngressNamedPorts(t *testing.T) {
	for _, c := range []struct {
		np   networkingv1.NetworkPolicy
		want bool
	}{
		{webPolicy("ns"), false},
		{webPolicy("ns", "http"), true},
	} {
		s, err := SelectionOf(&c.np)
		if err != nil || s.IngressNamedPorts != c.want {
			t.Errorf("%+v: IngressNamedPorts %v, err %v; want %v", c.np.Spec.Ingress, s.IngressNamedPorts, err, c.want)
		}
	}
}

// The controller splits a policy with an ingress named port into one set
// per resolution: pod api serves "http" on 8080, old-api on 8000. Each pod
// gets its own set's rules only, although both sets' selector matches both.
// A new pod no set lists is isolated without rules until it is listed.
func TestComputeNamedPortSetsApplyOnlyToTheirPods(t *testing.T) {
	api := pe("ns", "web", "web-8080", nil, ingressOnly, []string{"api"}, onPort(8080), nil)
	oldAPI := pe("ns", "web", "web-8000", nil, ingressOnly, []string{"old-api"}, onPort(8000), nil)
	pods := []Pod{webPod("api"), webPod("old-api"), webPod("new-api")}
	r, _ := Build([]v1alpha1.PolicyEndpoint{api, oldAPI}, []networkingv1.NetworkPolicy{webPolicy("ns", "http")}, pods)

	for pod, want := range map[string][]uint16{"api": {8080}, "old-api": {8000}} {
		k := PodKey{"ns", pod}
		if got := ingressPorts(r.Endpoints[k]); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ingress ports %v, want %v", pod, got, want)
		}
		if !r.Settled[k] {
			t.Errorf("%s: not settled", pod)
		}
	}
	k := PodKey{"ns", "new-api"}
	ep := r.Endpoints[k]
	if ep == nil || !ep.Ingress.Isolated || len(ep.Ingress.Rules) != 0 {
		t.Fatalf("new pod: %+v, want ingress isolated without rules", ep)
	}
	if r.Settled[k] {
		t.Errorf("new pod settled before the controller listed it")
	}
	if got := r.Policies[k]; !reflect.DeepEqual(got, []PolicyKey{{"ns", "web"}}) {
		t.Errorf("policies of the new pod: %v", got)
	}
}

// Without named ports the rules hold for any target: a new pod gets them
// through the selector at once, from one set only. When the NetworkPolicy
// is not held, the agent cannot tell, and isolates without rules.
func TestComputeSelectorRulesOnlyWhenTargetIndependent(t *testing.T) {
	web := pe("ns", "web", "web-x", nil, both, []string{"p1"}, onPort(80), []v1alpha1.EndpointInfo{{CIDR: "10.2.0.0/16"}})
	pods := []Pod{webPod("p1"), webPod("p-new")}
	k := PodKey{"ns", "p-new"}

	r, _ := Build([]v1alpha1.PolicyEndpoint{web}, []networkingv1.NetworkPolicy{webPolicy("ns")}, pods)
	ep := r.Endpoints[k]
	if got := ingressPorts(ep); !reflect.DeepEqual(got, []uint16{80}) || len(ep.Egress.Rules) != 1 || !r.Settled[k] {
		t.Fatalf("new pod with the policy held: %+v settled %v; want the set's rules, settled", ep, r.Settled[k])
	}

	r, _ = Build([]v1alpha1.PolicyEndpoint{web}, nil, pods)
	ep = r.Endpoints[k]
	if ep == nil || !ep.Ingress.Isolated || len(ep.Ingress.Rules) != 0 || r.Settled[k] {
		t.Fatalf("new pod without the policy held: %+v settled %v; want ingress isolated without rules", ep, r.Settled[k])
	}
	if len(ep.Egress.Rules) != 1 {
		t.Errorf("egress rules do not depend on the target pod and should apply: %+v", ep.Egress)
	}
}

package agent

import (
	"net/netip"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/policy"
)

func TestFlowRecordNamesPodAndDecidingPolicy(t *testing.T) {
	pe := v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-x"},
		Spec: v1alpha1.PolicyEndpointSpec{
			PolicyRef:            v1alpha1.PolicyReference{Namespace: "ns", Name: "web"},
			PodIsolation:         []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			PodSelectorEndpoints: []v1alpha1.PodEndpoint{{Namespace: "ns", Name: "web-1", PodIP: "10.0.0.1"}},
			Ingress:              []v1alpha1.EndpointInfo{{CIDR: "10.1.0.0/16"}},
		},
	}
	result, _ := policyset.Build([]v1alpha1.PolicyEndpoint{pe}, nil, nil)
	web := policyset.PodKey{Namespace: "ns", Name: "web-1"}
	a := &Agent{}
	a.view.Store(&nodeView{pods: map[int]policyset.PodKey{42: web}, result: &result})
	ruleID := result.Endpoints[web].Ingress.Rules[0].ID

	at := time.Now()
	allowed := a.flowRecord(dataplane.Event{Time: at, Ifindex: 42, Direction: policy.Ingress, Allowed: true, Reason: "new-flow", Protocol: policy.TCP,
		Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("10.0.0.1"), SrcPort: 40000, DstPort: 8080, RuleID: ruleID})
	if allowed.Verdict != "allow" || allowed.Pod != "web-1" || allowed.Namespace != "ns" || allowed.Peer != "10.1.2.3" || allowed.PodIP != "10.0.0.1" ||
		allowed.Port != 8080 || allowed.Protocol != "TCP" || allowed.Policy != "ns/web" || allowed.Direction != "ingress" || !allowed.Time.Equal(at) {
		t.Fatalf("allowed flow: %+v", allowed)
	}
	denied := a.flowRecord(dataplane.Event{Ifindex: 42, Direction: policy.Egress, Reason: "deny", Protocol: policy.UDP,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("8.8.8.8"), DstPort: 53})
	if denied.Verdict != "deny" || denied.Peer != "8.8.8.8" || denied.Direction != "egress" || denied.Policy != "ns/web" || denied.Protocol != "UDP" {
		t.Fatalf("denied flow: %+v", denied)
	}
	unknown := a.flowRecord(dataplane.Event{Ifindex: 7, Protocol: 99})
	if unknown.Pod != "" || unknown.Policy != "" || unknown.Protocol != "99" {
		t.Fatalf("flow of an unknown interface: %+v", unknown)
	}
}

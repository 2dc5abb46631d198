package policyset

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/policy"
)

func ptr[T any](v T) *T { return &v }

// pe builds a PolicyEndpoint of policy ns/name listing pods, with rules.
func pe(ns, name, obj string, chunk *v1alpha1.Chunk, isolation []networkingv1.PolicyType, pods []string, ingress, egress []v1alpha1.EndpointInfo) v1alpha1.PolicyEndpoint {
	p := v1alpha1.PolicyEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: obj},
		Spec: v1alpha1.PolicyEndpointSpec{
			PodSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			PolicyRef:    v1alpha1.PolicyReference{Namespace: ns, Name: name},
			PodIsolation: isolation,
			Ingress:      ingress,
			Egress:       egress,
			NodeName:     "node-a",
			Chunk:        chunk,
		},
	}
	for _, pod := range pods {
		p.Spec.PodSelectorEndpoints = append(p.Spec.PodSelectorEndpoints, v1alpha1.PodEndpoint{Namespace: ns, Name: pod, PodIP: "10.0.0.9", HostIP: "192.168.0.1"})
	}
	return p
}

var ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
var both = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3":      "10.1.2.3/32",
		"fd00::1":       "fd00::1/128",
		"10.1.2.3/8":    "10.0.0.0/8",
		"0.0.0.0/0":     "0.0.0.0/0",
		"fd00::1:2/112": "fd00::1:0/112",
	} {
		got, err := ParseAddress(v1alpha1.NetworkAddress(in))
		if err != nil || got.String() != want {
			t.Errorf("ParseAddress(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "10.0.0.256", "10.0.0.0/33", "fe80::1%eth0", "fd00::/129", "host"} {
		if _, err := ParseAddress(v1alpha1.NetworkAddress(bad)); err == nil {
			t.Errorf("ParseAddress(%q) succeeded, want error", bad)
		}
	}
}

func TestConvertPorts(t *testing.T) {
	udp, sctp, icmp := corev1.ProtocolUDP, corev1.ProtocolSCTP, corev1.Protocol("ICMP")
	got, err := ConvertPorts([]v1alpha1.Port{
		{Port: ptr(int32(80))},
		{Protocol: &udp},
		{Protocol: &sctp, Port: ptr(int32(1000)), EndPort: ptr(int32(2000))},
		{Port: ptr(int32(53)), EndPort: ptr(int32(53))},
	})
	want := []policy.PortRange{
		{Protocol: policy.TCP, Port: 80},
		{Protocol: policy.UDP},
		{Protocol: policy.SCTP, Port: 1000, EndPort: 2000},
		{Protocol: policy.TCP, Port: 53},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ConvertPorts = %+v, %v; want %+v", got, err, want)
	}
	for name, bad := range map[string]v1alpha1.Port{
		"endPort without port": {EndPort: ptr(int32(10))},
		"endPort below port":   {Port: ptr(int32(10)), EndPort: ptr(int32(9))},
		"port zero":            {Port: ptr(int32(0))},
		"port too big":         {Port: ptr(int32(70000))},
		"unknown protocol":     {Protocol: &icmp},
	} {
		if _, err := ConvertPorts([]v1alpha1.Port{bad}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestRuleIDStableAndDistinct(t *testing.T) {
	seen := map[uint32]RuleOrigin{}
	for _, name := range []string{"a", "b", "web"} {
		for _, dir := range []policy.Dir{policy.Ingress, policy.Egress} {
			for i := 0; i < 200; i++ {
				o := RuleOrigin{Policy: PolicyKey{"ns", name}, Set: "s", Direction: dir, Index: i}
				id := RuleID(o)
				if id == 0 || id != RuleID(o) {
					t.Fatalf("RuleID(%+v) = %d, not stable or zero", o, id)
				}
				if prev, dup := seen[id]; dup {
					t.Fatalf("RuleID collision between %+v and %+v", prev, o)
				}
				seen[id] = o
			}
		}
	}
}

func chunk(set string, index, total int32, revision string) *v1alpha1.Chunk {
	return &v1alpha1.Chunk{Set: set, Index: index, Total: total, Revision: revision}
}

func TestAssembleUnchunked(t *testing.T) {
	sets, waiting := Assemble([]v1alpha1.PolicyEndpoint{pe("ns", "web", "web-x", nil, ingressOnly, []string{"p1"}, nil, nil)}, nil)
	if len(waiting) != 0 || len(sets) != 1 {
		t.Fatalf("sets %v waiting %v", sets, waiting)
	}
	s := sets[SetKey{PolicyKey{"ns", "web"}, "object/web-x"}]
	if !s.Complete || len(s.Spec.PodSelectorEndpoints) != 1 || !reflect.DeepEqual(s.Objects, []string{"web-x"}) {
		t.Fatalf("set %+v", s)
	}
}

func TestAssembleChunksKeepPreviousUntilComplete(t *testing.T) {
	key := SetKey{PolicyKey{"ns", "web"}, "s1"}
	rev1 := []v1alpha1.PolicyEndpoint{
		pe("ns", "web", "web-1", chunk("s1", 1, 2, "r1"), ingressOnly, []string{"p2"}, []v1alpha1.EndpointInfo{{CIDR: "10.0.0.2"}}, nil),
		pe("ns", "web", "web-0", chunk("s1", 0, 2, "r1"), ingressOnly, []string{"p1"}, []v1alpha1.EndpointInfo{{CIDR: "10.0.0.1"}}, nil),
	}
	sets, waiting := Assemble(rev1, nil)
	got := sets[key]
	if len(waiting) != 0 || !got.Complete || got.Revision != "r1" || len(got.Spec.Ingress) != 2 || got.Spec.Ingress[0].CIDR != "10.0.0.1" {
		t.Fatalf("complete r1 not assembled in index order: %+v %v", got, waiting)
	}

	// r2 arrives one chunk at a time, overwriting r1's objects in place.
	partial := []v1alpha1.PolicyEndpoint{
		pe("ns", "web", "web-0", chunk("s1", 0, 3, "r2"), ingressOnly, []string{"p1"}, nil, nil),
		rev1[0],
	}
	sets2, waiting2 := Assemble(partial, sets)
	if sets2[key].Revision != "r1" || !sets2[key].Complete {
		t.Fatalf("incomplete r2 replaced r1: %+v", sets2[key])
	}
	if len(waiting2) != 1 || waiting2[0].Have != 2 || waiting2[0].Total != 3 || waiting2[0].Enforced != "r1" {
		t.Fatalf("waiting %+v", waiting2)
	}

	complete := []v1alpha1.PolicyEndpoint{
		pe("ns", "web", "web-0", chunk("s1", 0, 3, "r2"), ingressOnly, nil, nil, nil),
		pe("ns", "web", "web-1", chunk("s1", 1, 3, "r2"), ingressOnly, nil, nil, nil),
		pe("ns", "web", "web-2", chunk("s1", 2, 3, "r2"), ingressOnly, nil, nil, nil),
	}
	sets3, waiting3 := Assemble(complete, sets2)
	if sets3[key].Revision != "r2" || len(sets3[key].Objects) != 3 || len(waiting3) != 0 {
		t.Fatalf("complete r2 not enforced: %+v %v", sets3[key], waiting3)
	}

	// Every object gone: the set no longer concerns the node.
	if s, _ := Assemble(nil, sets3); len(s) != 0 {
		t.Fatalf("set without objects kept: %+v", s)
	}
}

func TestAssembleIncompleteWithoutPreviousIsolates(t *testing.T) {
	partial := []v1alpha1.PolicyEndpoint{
		pe("ns", "web", "web-0", chunk("s1", 0, 2, "r1"), ingressOnly, []string{"p1"}, []v1alpha1.EndpointInfo{{CIDR: "0.0.0.0/0"}}, nil),
	}
	sets, waiting := Assemble(partial, nil)
	s := sets[SetKey{PolicyKey{"ns", "web"}, "s1"}]
	if s.Complete || len(s.Spec.Ingress) != 0 || len(waiting) != 1 || waiting[0].Enforced != "" {
		t.Fatalf("set %+v waiting %v", s, waiting)
	}
	r := Compute(Input{Sets: sets})
	ep := r.Endpoints[PodKey{"ns", "p1"}]
	if ep == nil || !ep.Ingress.Isolated || len(ep.Ingress.Rules) != 0 || r.Settled[PodKey{"ns", "p1"}] {
		t.Fatalf("pod of incomplete set not isolated with nothing allowed, or settled: %+v", ep)
	}
	// The selector of an incomplete set is not used: only listed pods.
	r = Compute(Input{Sets: sets, Pods: []Pod{{Namespace: "ns", Name: "p9", Labels: map[string]string{"app": "web"}}}})
	if _, ok := r.Endpoints[PodKey{"ns", "p9"}]; ok {
		t.Fatalf("incomplete set applied by selector")
	}
}

func TestAssembleSetsOfOnePolicyAreIndependent(t *testing.T) {
	pes := []v1alpha1.PolicyEndpoint{
		pe("ns", "web", "a-0", chunk("a", 0, 1, "r1"), ingressOnly, []string{"p1"}, []v1alpha1.EndpointInfo{{CIDR: "10.0.0.1"}}, nil),
		pe("ns", "web", "b-0", chunk("b", 0, 2, "r7"), ingressOnly, []string{"p2"}, []v1alpha1.EndpointInfo{{CIDR: "10.0.0.2"}}, nil),
	}
	sets, waiting := Assemble(pes, nil)
	if !sets[SetKey{PolicyKey{"ns", "web"}, "a"}].Complete || sets[SetKey{PolicyKey{"ns", "web"}, "b"}].Complete || len(waiting) != 1 {
		t.Fatalf("sets %+v waiting %v", sets, waiting)
	}
}

func TestAssembleIgnoresObjectsBeingDeleted(t *testing.T) {
	deleting := pe("ns", "web", "a", nil, ingressOnly, nil, nil, nil)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	if sets, _ := Assemble([]v1alpha1.PolicyEndpoint{deleting}, nil); len(sets) != 0 {
		t.Errorf("object being deleted enforced")
	}
}

func TestComputeUnionAndRules(t *testing.T) {
	web := pe("ns", "web", "web-x", nil, ingressOnly, []string{"p1", "p2"},
		[]v1alpha1.EndpointInfo{{CIDR: "10.1.0.0/16", Except: []v1alpha1.NetworkAddress{"10.1.2.0/24"}, Ports: []v1alpha1.Port{{Port: ptr(int32(80))}}}},
		[]v1alpha1.EndpointInfo{{CIDR: "0.0.0.0/0"}}) // egress rules of an ingress-only policy
	dns := pe("ns", "dns", "dns-x", nil, both, []string{"p1"},
		[]v1alpha1.EndpointInfo{{CIDR: "fd00::5"}},
		[]v1alpha1.EndpointInfo{{CIDR: "10.96.0.10", Ports: []v1alpha1.Port{{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(int32(53))}}}})
	r, waiting := Build([]v1alpha1.PolicyEndpoint{web, dns}, nil, nil)
	if len(waiting) != 0 || len(r.Errors) != 0 {
		t.Fatalf("waiting %v errors %v", waiting, r.Errors)
	}
	webIn := policy.Rule{ID: RuleID(RuleOrigin{PolicyKey{"ns", "web"}, "object/web-x", policy.Ingress, 0}), CIDR: netip.MustParsePrefix("10.1.0.0/16"),
		Except: []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")}, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}}}
	dnsIn := policy.Rule{ID: RuleID(RuleOrigin{PolicyKey{"ns", "dns"}, "object/dns-x", policy.Ingress, 0}), CIDR: netip.MustParsePrefix("fd00::5/128")}
	dnsOut := policy.Rule{ID: RuleID(RuleOrigin{PolicyKey{"ns", "dns"}, "object/dns-x", policy.Egress, 0}), CIDR: netip.MustParsePrefix("10.96.0.10/32"),
		Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53}}}

	want := map[PodKey]*policy.Endpoint{
		{"ns", "p1"}: {
			Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{dnsIn, webIn}},
			// web's egress rules count because dns isolates egress.
			Egress: policy.Direction{Isolated: true, Rules: []policy.Rule{dnsOut, {ID: RuleID(RuleOrigin{PolicyKey{"ns", "web"}, "object/web-x", policy.Egress, 0}), CIDR: netip.MustParsePrefix("0.0.0.0/0")}}},
		},
		{"ns", "p2"}: {Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{webIn}}},
	}
	if !reflect.DeepEqual(r.Endpoints, want) {
		t.Fatalf("endpoints:\n got %+v\nwant %+v", r.Endpoints, want)
	}
	if got := r.Policies[PodKey{"ns", "p1"}]; !reflect.DeepEqual(got, []PolicyKey{{"ns", "dns"}, {"ns", "web"}}) {
		t.Fatalf("policies of p1: %v", got)
	}
	if o, ok := r.Origin(dnsOut.ID); !ok || o != (RuleOrigin{PolicyKey{"ns", "dns"}, "object/dns-x", policy.Egress, 0}) {
		t.Fatalf("origin of dns egress rule: %+v", o)
	}
	if _, ok := r.Origin(12345); ok {
		t.Fatalf("origin found for an unknown rule ID")
	}
}

func TestComputeChunkRuleIndicesSpanChunks(t *testing.T) {
	c0 := pe("ns", "web", "w0", chunk("s", 0, 2, "r"), ingressOnly, []string{"p1"},
		[]v1alpha1.EndpointInfo{{CIDR: "10.0.0.1"}}, nil)
	c1 := pe("ns", "web", "w1", chunk("s", 1, 2, "r"), ingressOnly, []string{"p2"},
		[]v1alpha1.EndpointInfo{{CIDR: "10.0.0.2"}}, nil)
	r, _ := Build([]v1alpha1.PolicyEndpoint{c1, c0}, nil, nil)
	for _, pod := range []string{"p1", "p2"} {
		ep := r.Endpoints[PodKey{"ns", pod}]
		if ep == nil || len(ep.Ingress.Rules) != 2 || ep.Ingress.Rules[1].CIDR.String() != "10.0.0.2/32" {
			t.Fatalf("%s: %+v", pod, ep)
		}
		if o, _ := r.Origin(ep.Ingress.Rules[1].ID); o.Index != 1 {
			t.Fatalf("second chunk's rule has index %d", o.Index)
		}
	}
}

func TestComputeInvalidCIDRFailsClosed(t *testing.T) {
	bad := pe("ns", "bad", "bad-x", nil, both, []string{"p1"},
		[]v1alpha1.EndpointInfo{{CIDR: "10.0.0.0/8"}, {CIDR: "10.0.0.0/99"}}, []v1alpha1.EndpointInfo{{CIDR: "0.0.0.0/0"}})
	good := pe("ns", "good", "good-x", nil, ingressOnly, []string{"p1"}, []v1alpha1.EndpointInfo{{CIDR: "192.168.0.0/16"}}, nil)
	r, _ := Build([]v1alpha1.PolicyEndpoint{bad, good}, nil, nil)
	err := r.Errors[SetKey{PolicyKey{"ns", "bad"}, "object/bad-x"}]
	if err == nil || !strings.Contains(err.Error(), "10.0.0.0/99") {
		t.Fatalf("error %v does not name the bad CIDR", err)
	}
	ep := r.Endpoints[PodKey{"ns", "p1"}]
	if ep == nil || !ep.Ingress.Isolated || !ep.Egress.Isolated {
		t.Fatalf("pod not isolated: %+v", ep)
	}
	if len(ep.Egress.Rules) != 0 || len(ep.Ingress.Rules) != 1 || ep.Ingress.Rules[0].CIDR.String() != "192.168.0.0/16" {
		t.Fatalf("bad policy's rules leaked or good policy's lost: %+v", ep)
	}
	if len(r.Errors) != 1 {
		t.Fatalf("good policy reported failing")
	}
}

func TestComputeLocalSelection(t *testing.T) {
	np := networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "locked"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "db"}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{}},
		},
	}
	// The controller has compiled "web" for p1 only; p-new is a new pod the
	// controller has not listed yet.
	web := pe("ns", "web", "web-x", nil, ingressOnly, []string{"p1"}, []v1alpha1.EndpointInfo{{CIDR: "10.0.0.0/8"}}, nil)
	pods := []Pod{
		{Namespace: "ns", Name: "p1", Labels: map[string]string{"app": "web"}},
		{Namespace: "ns", Name: "p-new", Labels: map[string]string{"app": "web", "tier": "db"}},
		{Namespace: "other", Name: "p-other", Labels: map[string]string{"app": "web", "tier": "db"}},
		{Namespace: "ns", Name: "p-free", Labels: map[string]string{"app": "api"}},
	}
	r, _ := Build([]v1alpha1.PolicyEndpoint{web}, []networkingv1.NetworkPolicy{np, webPolicy("ns")}, pods)

	pNew := r.Endpoints[PodKey{"ns", "p-new"}]
	if pNew == nil || !pNew.Ingress.Isolated || !pNew.Egress.Isolated {
		t.Fatalf("new pod selected by two policies not isolated both ways: %+v", pNew)
	}
	if r.Settled[PodKey{"ns", "p-new"}] || !r.Settled[PodKey{"ns", "p1"}] {
		t.Fatalf("settled: %v", r.Settled)
	}
	if len(pNew.Ingress.Rules) != 1 || pNew.Ingress.Rules[0].CIDR.String() != "10.0.0.0/8" || len(pNew.Egress.Rules) != 0 {
		t.Fatalf("new pod should get web's held rules and no egress rule yet: %+v", pNew)
	}
	if got := r.Policies[PodKey{"ns", "p-new"}]; !reflect.DeepEqual(got, []PolicyKey{{"ns", "locked"}, {"ns", "web"}}) {
		t.Fatalf("policies of p-new: %v", got)
	}
	if _, ok := r.Endpoints[PodKey{"other", "p-other"}]; ok {
		t.Fatalf("policy applied across namespaces")
	}
	if _, ok := r.Endpoints[PodKey{"ns", "p-free"}]; ok {
		t.Fatalf("unselected pod policed")
	}
}

func TestSelectionOfPolicyTypes(t *testing.T) {
	cases := []struct {
		spec            networkingv1.NetworkPolicySpec
		ingress, egress bool
		err             bool
	}{
		{spec: networkingv1.NetworkPolicySpec{}, ingress: true},
		{spec: networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{}}}, ingress: true, egress: true},
		{spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}, egress: true},
		{spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Sideways"}}, ingress: true, egress: true, err: true},
		{spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}}, err: true},
	}
	for i, c := range cases {
		s, err := SelectionOf(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: c.spec})
		if (err != nil) != c.err {
			t.Errorf("case %d: err %v", i, err)
			continue
		}
		if s.Selector != nil && (s.Ingress != c.ingress || s.Egress != c.egress) {
			t.Errorf("case %d: ingress %v egress %v", i, s.Ingress, s.Egress)
		}
	}
}

func TestComputeReusesCompiledSetsUntilGenerationChanges(t *testing.T) {
	obj := pe("ns", "web", "web-x", nil, ingressOnly, []string{"p1"}, []v1alpha1.EndpointInfo{{CIDR: "10.0.0.0/8"}}, nil)
	obj.UID, obj.Generation = "u1", 1
	sets, _ := Assemble([]v1alpha1.PolicyEndpoint{obj}, nil)
	first := Compute(Input{Sets: sets})

	// Same generation: the earlier compilation is reused, even if the
	// spec given differs (it cannot, for one generation of one object).
	changed := obj
	changed.Spec.Ingress = []v1alpha1.EndpointInfo{{CIDR: "192.168.0.0/16"}}
	sets, _ = Assemble([]v1alpha1.PolicyEndpoint{changed}, sets)
	again := Compute(Input{Sets: sets, Previous: &first})
	if got := again.Endpoints[PodKey{"ns", "p1"}].Ingress.Rules[0].CIDR.String(); got != "10.0.0.0/8" {
		t.Fatalf("same generation recompiled: %s", got)
	}
	changed.Generation = 2
	sets, _ = Assemble([]v1alpha1.PolicyEndpoint{changed}, sets)
	third := Compute(Input{Sets: sets, Previous: &again})
	if got := third.Endpoints[PodKey{"ns", "p1"}].Ingress.Rules[0].CIDR.String(); got != "192.168.0.0/16" {
		t.Fatalf("new generation not recompiled: %s", got)
	}
}

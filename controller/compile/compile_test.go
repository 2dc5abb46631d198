package compile

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/palisade-net/palisade/api/v1alpha1"
)

const (
	TCP  = corev1.ProtocolTCP
	UDP  = corev1.ProtocolUDP
	SCTP = corev1.ProtocolSCTP
)

var (
	ingressOnly = policyTypes(networkingv1.PolicyTypeIngress)
	egressOnly  = policyTypes(networkingv1.PolicyTypeEgress)
)

// world is the cluster most semantic cases run against.
func world() Objects {
	objs := Objects{
		Namespaces: []corev1.Namespace{*namespace("x", "ns", "x"), *namespace("y", "ns", "y", "team", "blue"), *namespace("z", "ns", "z")},
	}
	for _, p := range []*corev1.Pod{
		pod("x", "a", "10.0.0.1", withLabels("pod", "a", "app", "web"), withPort("http", TCP, 8080)),
		pod("x", "b", "10.0.0.2", onNode("node2"), withPort("http", TCP, 9090)),
		pod("x", "c", "10.0.0.3"),
		pod("x", "host", "192.168.0.1", hostNetwork()),
		pod("x", "done", "10.0.0.9", withPhase(corev1.PodSucceeded)),
		pod("x", "failed", "10.0.0.8", withPhase(corev1.PodFailed)),
		pod("x", "noip", "", withIPs()),
		pod("y", "a", "10.0.1.1"),
		pod("y", "b", "10.0.1.2", withLabels("pod", "b", "env", "prod")),
		pod("y", "dual", "10.0.1.3", withIPs("10.0.1.3", "fd00::13"), withPort("pg", TCP, 5432)),
		pod("z", "a", "10.0.2.1"),
	} {
		objs.Pods = append(objs.Pods, *p)
	}
	return objs
}

type semanticCase struct {
	name     string
	policies []*networkingv1.NetworkPolicy
	extra    func(*Objects)
	want     []string
	problems []string
}

func TestCompileSemantics(t *testing.T) {
	allIn := ingressRule(nil)
	cases := []semanticCase{
		{
			name:     "default deny ingress isolates every eligible pod, per node",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "deny", nil)},
			want: []string{
				"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1 x/c@10.0.0.3] in=[] eg=[]",
				"node=node2 iso=[Ingress] pods=[x/b@10.0.0.2] in=[] eg=[]",
			},
		},
		{
			name:     "pod selector peer is limited to the policy namespace",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod", "b"), nil)))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.2/32] eg=[]"},
		},
		{
			name:     "namespace selector alone selects every pod of the namespaces, both families",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(nil, sel("ns", "y"))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.1.1/32 10.0.1.2/32 10.0.1.3/32 fd00::13/128] eg=[]"},
		},
		{
			name:     "namespace and pod selector combined in one peer",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("env", "prod"), sel("team", "blue"))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.1.2/32] eg=[]"},
		},
		{
			name:     "empty namespace selector selects all namespaces",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod", "a"), &metav1.LabelSelector{})))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.1/32 10.0.1.1/32 10.0.2.1/32] eg=[]"},
		},
		{
			name:     "two peers of a rule are a union",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod", "c"), nil), podPeer(nil, sel("ns", "z"))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.3/32 10.0.2.1/32] eg=[]"},
		},
		{
			name:     "ipBlock with except",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(TCP, 80)), ipPeer("10.0.0.0/16", "10.0.1.0/24")))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.0/16!10.0.1.0/24(TCP:80)] eg=[]"},
		},
		{
			name:     "rule without peers allows every address on its ports",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(TCP, 80))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[0.0.0.0/0(TCP:80) ::/0(TCP:80)] eg=[]"},
		},
		{
			name:     "empty rule allows everything",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), allIn)},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[0.0.0.0/0 ::/0] eg=[]"},
		},
		{
			name:     "policyTypes default to Ingress plus Egress when egress rules exist",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressRule(nil, ipPeer("1.2.3.4/32")))},
			want:     []string{"node=node1 iso=[Ingress Egress] pods=[x/a@10.0.0.1] in=[] eg=[1.2.3.4/32]"},
		},
		{
			name:     "explicit Egress type ignores ingress rules and denies all egress",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), allIn, egressOnly)},
			want:     []string{"node=node1 iso=[Egress] pods=[x/a@10.0.0.1] in=[] eg=[]"},
		},
		{
			name:     "matchExpressions In",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(expr("pod", metav1.LabelSelectorOpIn, "a", "b"), nil)))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.1/32 10.0.0.2/32] eg=[]"},
		},
		{
			name:     "matchExpressions NotIn matches pods without the key",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(expr("app", metav1.LabelSelectorOpNotIn, "web"), nil)))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.2/32 10.0.0.3/32] eg=[]"},
		},
		{
			name:     "matchExpressions Exists",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(expr("app", metav1.LabelSelectorOpExists), nil)))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.1/32] eg=[]"},
		},
		{
			name:     "matchExpressions DoesNotExist on namespaces",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("pod", "a"), expr("team", metav1.LabelSelectorOpDoesNotExist))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.1/32 10.0.2.1/32] eg=[]"},
		},
		{
			name:     "ingress named port resolves per target pod; a pod without it gets no allow",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", nil, ingressRule(ports(port(TCP, "http"))))},
			want: []string{
				"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[0.0.0.0/0(TCP:8080) ::/0(TCP:8080)] eg=[]",
				"node=node1 iso=[Ingress] pods=[x/c@10.0.0.3] in=[] eg=[]",
				"node=node2 iso=[Ingress] pods=[x/b@10.0.0.2] in=[0.0.0.0/0(TCP:9090) ::/0(TCP:9090)] eg=[]",
			},
		},
		{
			name:     "named and numeric ports together",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", nil, ingressRule(ports(port(TCP, "http"), port(TCP, 81)), podPeer(nil, sel("ns", "z"))))},
			want: []string{
				"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.2.1/32(TCP:81,TCP:8080)] eg=[]",
				"node=node1 iso=[Ingress] pods=[x/c@10.0.0.3] in=[10.0.2.1/32(TCP:81)] eg=[]",
				"node=node2 iso=[Ingress] pods=[x/b@10.0.0.2] in=[10.0.2.1/32(TCP:81,TCP:9090)] eg=[]",
			},
		},
		{
			name:     "named port of the wrong protocol does not resolve",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(port(UDP, "http"))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[] eg=[]"},
			problems: []string{ReasonUnresolvedNamedPort},
		},
		{
			name:     "egress named port resolves per peer pod",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "c"), egressOnly, egressRule(ports(port(TCP, "http")), podPeer(&metav1.LabelSelector{}, nil)))},
			want:     []string{"node=node1 iso=[Egress] pods=[x/c@10.0.0.3] in=[] eg=[10.0.0.1/32(TCP:8080) 10.0.0.2/32(TCP:9090)]"},
		},
		{
			name:     "egress named port on an ipBlock allows nothing there",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "c"), egressOnly, egressRule(ports(port(TCP, "http")), ipPeer("10.0.0.0/8")))},
			want:     []string{"node=node1 iso=[Egress] pods=[x/c@10.0.0.3] in=[] eg=[]"},
			problems: []string{ReasonNamedPortOnIPBlock},
		},
		{
			name:     "endPort and every protocol",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(ports(portRange(TCP, 8000, 9000), port(UDP, 80), port(UDP, nil), port(SCTP, 81))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[0.0.0.0/0(TCP:8000-9000,UDP,UDP:80,SCTP:81) ::/0(TCP:8000-9000,UDP,UDP:80,SCTP:81)] eg=[]"},
		},
		{
			name:     "dual-stack target appears once per IP",
			policies: []*networkingv1.NetworkPolicy{netpol("y", "p", sel("pod", "dual"))},
			want:     []string{"node=node1 iso=[Ingress] pods=[y/dual@10.0.1.3 y/dual@fd00::13] in=[] eg=[]"},
		},
		{
			name:     "hostNetwork, terminated and IP-less pods are never peers",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, podPeer(&metav1.LabelSelector{}, nil)))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.1/32 10.0.0.2/32 10.0.0.3/32] eg=[]"},
		},
		{
			name:     "policy selecting no pod yields no object",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "nobody"), allIn)},
		},
		{
			name: "unscheduled pod is not a target",
			extra: func(o *Objects) {
				o.Pods = append(o.Pods, *pod("z", "pending", "10.0.2.9", onNode("")))
			},
			policies: []*networkingv1.NetworkPolicy{netpol("z", "p", nil)},
			want:     []string{"node=node1 iso=[Ingress] pods=[z/a@10.0.2.1] in=[] eg=[]"},
		},
		{
			name:     "invalid ipBlock CIDR allows nothing, other peers still apply",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, ipPeer("10.0.0.0/33"), podPeer(sel("pod", "b"), nil)))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.0.0.2/32] eg=[]"},
			problems: []string{ReasonInvalidIPBlock},
		},
		{
			name:     "invalid except drops the whole block rather than widen it",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, ipPeer("10.0.0.0/8", "bogus")))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[] eg=[]"},
			problems: []string{ReasonInvalidIPBlock},
		},
		{
			name: "invalid port range makes its rule allow nothing instead of every port",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"),
				ingressRule(ports(portRange(TCP, 90, 80))))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[] eg=[]"},
			problems: []string{ReasonInvalidPort},
		},
		{
			name:     "ipBlock host bits are masked",
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), ingressRule(nil, ipPeer("10.1.2.3/16"), ipPeer("fd00::1/64")))},
			want:     []string{"node=node1 iso=[Ingress] pods=[x/a@10.0.0.1] in=[10.1.0.0/16 fd00::/64] eg=[]"},
		},
	}
	cases = append(cases, serviceCases()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := world()
			if tc.extra != nil {
				tc.extra(&objs)
			}
			for _, np := range tc.policies {
				objs.NetworkPolicies = append(objs.NetworkPolicies, *np)
			}
			objects, problems := CompileAll(objs, Options{})
			assertLines(t, render(objects), tc.want)
			if got := problemReasons(problems); !slices.Equal(got, tc.problems) {
				t.Errorf("problems %v, want %v (%+v)", got, tc.problems, problems)
			}
		})
	}
}

func serviceCases() []semanticCase {
	dbPolicy := func(p networkingv1.NetworkPolicyPort) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressOnly,
			egressRule(ports(p), podPeer(sel("pod", "dual"), sel("ns", "y"))))}
	}
	dbService := func(target intstr.IntOrString) *corev1.Service {
		return service("y", "db", []string{"10.96.0.10", "fd00:96::10"}, svcPort("sql", 80, target))
	}
	return []semanticCase{
		{
			name: "service cluster IPs of both families are allowed on the service port",
			extra: func(o *Objects) {
				o.Services = append(o.Services, *dbService(intstr.FromInt32(5432)))
				o.EndpointSlices = append(o.EndpointSlices,
					*endpointSlice("y", "db-v4", "db", discoveryv1.AddressTypeIPv4, "sql", 5432, "y/dual=10.0.1.3"),
					*endpointSlice("y", "db-v6", "db", discoveryv1.AddressTypeIPv6, "sql", 5432, "y/dual=fd00::13"))
			},
			policies: dbPolicy(port(TCP, 5432)),
			want:     []string{"node=node1 iso=[Egress] pods=[x/a@10.0.0.1] in=[] eg=[10.0.1.3/32(TCP:5432) 10.96.0.10/32(TCP:80) fd00:96::10/128(TCP:80) fd00::13/128(TCP:5432)]"},
		},
		{
			name: "named target port and named policy port",
			extra: func(o *Objects) {
				o.Services = append(o.Services, *dbService(intstr.FromString("pg")))
				o.EndpointSlices = append(o.EndpointSlices,
					*endpointSlice("y", "db-v4", "db", discoveryv1.AddressTypeIPv4, "sql", 5432, "y/dual=10.0.1.3"))
			},
			policies: dbPolicy(port(TCP, "pg")),
			want:     []string{"node=node1 iso=[Egress] pods=[x/a@10.0.0.1] in=[] eg=[10.0.1.3/32(TCP:5432) 10.96.0.10/32(TCP:80) fd00::13/128(TCP:5432)]"},
		},
		{
			name: "a backend outside the allowed pods keeps that family's cluster IP closed",
			extra: func(o *Objects) {
				o.Services = append(o.Services, *dbService(intstr.FromInt32(5432)))
				o.EndpointSlices = append(o.EndpointSlices,
					*endpointSlice("y", "db-v4", "db", discoveryv1.AddressTypeIPv4, "sql", 5432, "y/dual=10.0.1.3", "y/b=10.0.1.2"),
					*endpointSlice("y", "db-v6", "db", discoveryv1.AddressTypeIPv6, "sql", 5432, "y/dual=fd00::13"))
			},
			policies: dbPolicy(port(TCP, 5432)),
			want:     []string{"node=node1 iso=[Egress] pods=[x/a@10.0.0.1] in=[] eg=[10.0.1.3/32(TCP:5432) fd00:96::10/128(TCP:80) fd00::13/128(TCP:5432)]"},
		},
		{
			name: "a service whose target port the policy does not allow stays closed",
			extra: func(o *Objects) {
				o.Services = append(o.Services, *dbService(intstr.FromInt32(5433)))
				o.EndpointSlices = append(o.EndpointSlices,
					*endpointSlice("y", "db-v4", "db", discoveryv1.AddressTypeIPv4, "sql", 5433, "y/dual=10.0.1.3"))
			},
			policies: dbPolicy(port(TCP, 5432)),
			want:     []string{"node=node1 iso=[Egress] pods=[x/a@10.0.0.1] in=[] eg=[10.0.1.3/32(TCP:5432) fd00::13/128(TCP:5432)]"},
		},
		{
			name: "selectorless service with a hand-written slice is resolved by address",
			extra: func(o *Objects) {
				o.Services = append(o.Services, *service("y", "manual", []string{"10.96.0.11"}, svcPort("", 443, intstr.FromInt32(5432))))
				o.EndpointSlices = append(o.EndpointSlices,
					*endpointSlice("y", "manual-1", "manual", discoveryv1.AddressTypeIPv4, "", 5432, "=10.0.1.3"))
			},
			policies: dbPolicy(port(TCP, 5432)),
			want:     []string{"node=node1 iso=[Egress] pods=[x/a@10.0.0.1] in=[] eg=[10.0.1.3/32(TCP:5432) 10.96.0.11/32(TCP:443) fd00::13/128(TCP:5432)]"},
		},
		{
			name: "an ipBlock covering the backends allows the cluster IP",
			extra: func(o *Objects) {
				o.Services = append(o.Services, *dbService(intstr.FromInt32(5432)))
				o.EndpointSlices = append(o.EndpointSlices,
					*endpointSlice("y", "db-v4", "db", discoveryv1.AddressTypeIPv4, "sql", 5432, "y/dual=10.0.1.3", "y/b=10.0.1.2"))
			},
			policies: []*networkingv1.NetworkPolicy{netpol("x", "p", sel("pod", "a"), egressOnly,
				egressRule(ports(port(TCP, 5432)), ipPeer("10.0.1.0/24")))},
			want: []string{"node=node1 iso=[Egress] pods=[x/a@10.0.0.1] in=[] eg=[10.0.1.0/24(TCP:5432) 10.96.0.10/32(TCP:80)]"},
		},
	}
}

func TestCompiledObjectMetadata(t *testing.T) {
	objs := world()
	np := netpol("x", "web", nil)
	objs.NetworkPolicies = append(objs.NetworkPolicies, *np)
	objects, _ := CompileAll(objs, Options{})
	if len(objects) != 2 {
		t.Fatalf("got %d objects, want 2", len(objects))
	}
	names := map[string]bool{}
	for _, o := range objects {
		names[o.Name] = true
		if o.Namespace != "x" || o.Labels[v1alpha1.NodeLabel] != o.Spec.NodeName || o.Labels[v1alpha1.PolicyNameLabel] != "web" {
			t.Errorf("metadata %+v", o.ObjectMeta)
		}
		if len(o.OwnerReferences) != 1 || o.OwnerReferences[0].Kind != "NetworkPolicy" || o.OwnerReferences[0].UID != np.UID {
			t.Errorf("owner references %+v", o.OwnerReferences)
		}
		if o.Spec.PolicyRef != (v1alpha1.PolicyReference{Name: "web", Namespace: "x"}) {
			t.Errorf("policyRef %+v", o.Spec.PolicyRef)
		}
		if c := o.Spec.Chunk; c == nil || c.Set != o.Name || c.Index != 0 || c.Total != 1 || c.Revision == "" {
			t.Errorf("chunk %+v", c)
		}
	}
	again, _ := CompileAll(objs, Options{})
	for i := range again {
		if again[i].Name != objects[i].Name || again[i].Spec.Chunk.Revision != objects[i].Spec.Chunk.Revision {
			t.Errorf("compilation is not deterministic: %s/%s vs %s/%s", again[i].Name, again[i].Spec.Chunk.Revision, objects[i].Name, objects[i].Spec.Chunk.Revision)
		}
	}
	if len(names) != 2 {
		t.Errorf("names not distinct: %v", names)
	}
}

func TestLongPolicyNameFitsLimits(t *testing.T) {
	objs := world()
	long := ""
	for len(long) < 250 {
		long += "abcdefghij"
	}
	objs.NetworkPolicies = append(objs.NetworkPolicies, *netpol("x", long, nil))
	objects, _ := CompileAll(objs, Options{MaxEntriesPerObject: 1})
	for _, o := range objects {
		if len(o.Name) > 253 || len(o.Labels[v1alpha1.PolicyNameLabel]) > 63 {
			t.Errorf("name %d chars, label %d chars", len(o.Name), len(o.Labels[v1alpha1.PolicyNameLabel]))
		}
	}
	if o := objects[0]; o.Spec.PolicyRef.Name != long {
		t.Errorf("policyRef lost the full name")
	}
}

var _ = types.NamespacedName{}

func TestSchemaLimitsAreRespected(t *testing.T) {
	objs := world()
	var many []networkingv1.NetworkPolicyPort
	for p := 1; p <= 150; p++ {
		many = append(many, port(TCP, p))
	}
	var excepts []string
	for i := range 40 {
		excepts = append(excepts, fmt.Sprintf("10.%d.0.0/16", i))
	}
	objs.NetworkPolicies = append(objs.NetworkPolicies,
		*netpol("x", "ports", sel("pod", "a"), ingressRule(many, ipPeer("10.0.0.0/8"))),
		*netpol("x", "excepts", sel("pod", "a"), ingressRule(nil, ipPeer("10.0.0.0/8", excepts...))))
	objects, problems := CompileAll(objs, Options{MaxEntriesPerObject: 1 << 20})
	var ports []string
	for _, o := range objects {
		if n := len(o.Spec.PodSelectorEndpoints) + len(o.Spec.Ingress) + len(o.Spec.Egress); n > v1alpha1.MaxListItems {
			t.Errorf("%s holds %d entries", o.Name, n)
		}
		for _, e := range o.Spec.Ingress {
			if len(e.Ports) > v1alpha1.MaxPorts || len(e.Except) > v1alpha1.MaxExcepts {
				t.Errorf("%s: entry with %d ports, %d excepts", o.Name, len(e.Ports), len(e.Except))
			}
			for _, p := range e.Ports {
				ports = append(ports, fmt.Sprint(*p.Port))
			}
		}
	}
	if len(ports) != 150 {
		t.Errorf("split entries carry %d ports, want 150", len(ports))
	}
	if len(problems) != 0 {
		t.Errorf("problems %v", problemReasons(problems))
	}
	// 40 excepts, more than an entry holds: the block is split, and the
	// pieces hold exactly 10.0.0.0/8 without them.
	allowed := func(a netip.Addr) bool {
		for _, o := range objects {
			if o.Spec.PolicyRef.Name != "excepts" {
				continue
			}
			for _, e := range o.Spec.Ingress {
				if !netip.MustParsePrefix(string(e.CIDR)).Contains(a) {
					continue
				}
				if !slices.ContainsFunc(e.Except, func(x v1alpha1.NetworkAddress) bool { return netip.MustParsePrefix(string(x)).Contains(a) }) {
					return true
				}
			}
		}
		return false
	}
	for second := range 256 {
		a := netip.AddrFrom4([4]byte{10, byte(second), 7, 9})
		if want := second >= 40; allowed(a) != want {
			t.Errorf("%s allowed %v, want %v", a, allowed(a), want)
		}
	}
}

package compile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/palisade-net/palisade/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func compileWorld(t *testing.T, extra func(*Objects), nps ...*networkingv1.NetworkPolicy) ([]string, []Problem) {
	t.Helper()
	objs := world()
	if extra != nil {
		extra(&objs)
	}
	for _, np := range nps {
		objs.NetworkPolicies = append(objs.NetworkPolicies, *np)
	}
	objects, problems := CompileAll(objs, Options{})
	for _, o := range objects {
		t.Logf("object %s/%s policy=%s", o.Namespace, o.Name, o.Spec.PolicyRef.Name)
	}
	out := render(objects)
	for _, l := range out {
		t.Logf("  %s", l)
	}
	for _, p := range problems {
		t.Logf("  problem %s: %s", p.Reason, p.Message)
	}
	return out, problems
}

// Two policies whose names share the part kept in object names get
// objects of their own.
func TestLongPolicyNamesDoNotShareObjects(t *testing.T) {
	prefix := strings.Repeat("a", 240)
	objs := world()
	objs.NetworkPolicies = append(objs.NetworkPolicies,
		*netpol("x", prefix+"-one", sel("pod", "a")),
		*netpol("x", prefix+"-two", sel("pod", "a"), ingressRule(nil)))
	objects, _ := CompileAll(objs, Options{})
	names := map[string]string{}
	for _, o := range objects {
		if other, ok := names[o.Name]; ok && other != o.Spec.PolicyRef.Name {
			t.Errorf("object name %s...%s used by two policies (%s..., %s...)", o.Name[:10], o.Name[len(o.Name)-15:], other[236:], o.Spec.PolicyRef.Name[236:])
		}
		names[o.Name] = o.Spec.PolicyRef.Name
	}
	if len(names) != 2 {
		t.Errorf("%d objects, want one per policy", len(names))
	}
}

// An IPv4-mapped ipBlock of /96 or longer is the IPv4 block it maps; a
// shorter one is the IPv6 block net.ParseCIDR reads, never an invalid CIDR.
func TestMappedIPBlocks(t *testing.T) {
	out, _ := compileWorld(t, nil, netpol("x", "p", sel("pod", "a"), ingressRule(nil, ipPeer("::ffff:10.0.0.0/8"), ipPeer("::ffff:10.1.0.0/112", "::ffff:10.1.2.0/120"))))
	got := strings.Join(out, " ")
	for _, want := range []string{"::/8", "10.1.0.0/16!10.1.2.0/24"} {
		if !strings.Contains(got, want) {
			t.Errorf("compiled %q, want %s in it", got, want)
		}
	}
	if strings.Contains(got, "invalid") {
		t.Errorf("compiled an invalid CIDR: %q", got)
	}
}

// An endpoint whose targetRef names an allowed pod but whose address is
// elsewhere does not open the ClusterIP: traffic goes to the address.
func TestServiceEndpointJudgedByAddressNotTargetRef(t *testing.T) {
	out, _ := compileWorld(t, func(o *Objects) {
		o.Services = append(o.Services, *service("z", "evil", []string{"10.96.0.66"}, svcPort("", 5432, intstr.FromInt32(5432))))
		o.EndpointSlices = append(o.EndpointSlices,
			*endpointSlice("z", "evil-1", "evil", discoveryv1.AddressTypeIPv4, "", 5432, "y/dual=8.8.8.8"))
	}, netpol("x", "p", sel("pod", "a"), egressOnly,
		egressRule(ports(port(TCP, 5432)), podPeer(sel("pod", "dual"), sel("ns", "y")))))
	if strings.Contains(strings.Join(out, ""), "10.96.0.66") {
		t.Errorf("ClusterIP of a Service whose only backend is 8.8.8.8 is allowed")
	}
}

// A named port allows nothing to an ipBlock, nor to a Service whose
// backends the block holds.
func TestNamedPortOnIPBlockOpensNoService(t *testing.T) {
	out, _ := compileWorld(t, func(o *Objects) {
		o.Services = append(o.Services, *service("y", "db", []string{"10.96.0.10"}, svcPort("sql", 80, intstr.FromString("pg"))))
		o.EndpointSlices = append(o.EndpointSlices,
			*endpointSlice("y", "db-v4", "db", discoveryv1.AddressTypeIPv4, "sql", 5432, "y/dual=10.0.1.3"))
	}, netpol("x", "p", sel("pod", "a"), egressOnly, egressRule(ports(port(TCP, "pg")), ipPeer("10.0.1.0/24"))))
	if strings.Contains(strings.Join(out, ""), "10.96.0.10") {
		t.Errorf("ClusterIP allowed through the block on the named port: %v", out)
	}
}

// manualServiceOfDual: a policy of x/a allowing y/dual (10.0.1.3) on 5432,
// and a Service (10.96.0.11:443) whose hand-written slice lists that
// address without a targetRef.
func manualServiceOfDual() (*networkingv1.NetworkPolicy, *corev1.Service, *discoveryv1.EndpointSlice) {
	return netpol("x", "p", sel("pod", "a"), egressOnly,
			egressRule(ports(port(TCP, 5432)), podPeer(sel("pod", "dual"), sel("ns", "y")))),
		service("y", "manual", []string{"10.96.0.11"}, svcPort("", 443, intstr.FromInt32(5432))),
		endpointSlice("y", "manual-1", "manual", discoveryv1.AddressTypeIPv4, "", 5432, "=10.0.1.3")
}

// A slice seen before the pod that holds its address compiles as it does
// from scratch once the pod is seen.
func TestSliceBeforeItsPod(t *testing.T) {
	np, svc, slice := manualServiceOfDual()

	fresh := NewIndexOf(Objects{Pods: world().Pods, Services: []corev1.Service{*svc}, EndpointSlices: []discoveryv1.EndpointSlice{*slice}, NetworkPolicies: []networkingv1.NetworkPolicy{*np}, Namespaces: world().Namespaces})
	want := render(fresh.Compile(key("x", "p"), Options{}).Objects)
	if !strings.Contains(strings.Join(want, ""), "10.96.0.11/32(TCP:443)") {
		t.Fatalf("from scratch the Service of the allowed pod is not allowed: %v", want)
	}

	x := NewIndex()
	for _, n := range world().Namespaces {
		x.UpsertNamespace(&n)
	}
	x.UpsertPolicy(np)
	x.UpsertService(svc)
	x.UpsertEndpointSlice(slice) // informer delivered the slice first
	affected := PolicyKeys{}
	for _, p := range world().Pods {
		for k := range x.UpsertPod(&p) {
			affected[k] = struct{}{}
		}
	}
	got := render(x.Compile(key("x", "p"), Options{}).Objects)
	t.Logf("affected %v", keysOf(affected))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("incremental:\n  %s\nfrom scratch:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// Named ports come from the first regular container that defines them, then
// from sidecars; plain init containers define none.
func TestNamedPortsOfInitContainers(t *testing.T) {
	out, _ := compileWorld(t, func(o *Objects) {
		p := pod("z", "web", "10.0.2.5", withLabels("pod", "web"), withPort("http", TCP, 8080))
		always := corev1.ContainerRestartPolicyAlways
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "second", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 7777}}})
		p.Spec.InitContainers = []corev1.Container{
			{Name: "init", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9999}, {Name: "setup", ContainerPort: 9998}}},
			{Name: "sidecar", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 6666}, {Name: "metrics", ContainerPort: 9090}}},
		}
		o.Pods = append(o.Pods, *p)
	}, netpol("z", "p", sel("pod", "web"), ingressRule(ports(port(TCP, "http"), port(TCP, "metrics"), port(TCP, "setup")))))
	if got := strings.Join(out, ""); !strings.Contains(got, "in=[0.0.0.0/0(TCP:8080,TCP:9090) ::/0(TCP:8080,TCP:9090)]") {
		t.Errorf("compiled %s; want the first container's http (8080) and the sidecar's metrics (9090) only", got)
	}
}

// When an allowed pod's address passes to a pod the policy does not allow,
// a Service whose slice still lists the address is closed.
func TestServiceClosedWhenItsAddressChangesHands(t *testing.T) {
	np, svc, slice := manualServiceOfDual()
	objs := world()
	objs.Services = []corev1.Service{*svc}
	objs.EndpointSlices = []discoveryv1.EndpointSlice{*slice}
	objs.NetworkPolicies = []networkingv1.NetworkPolicy{*np}
	x := NewIndexOf(objs)
	if before := render(x.Compile(key("x", "p"), Options{}).Objects); !strings.Contains(strings.Join(before, ""), "10.96.0.11/32(TCP:443)") {
		t.Fatalf("the Service of the allowed pod is not allowed to begin with: %v", before)
	}
	// y/dual (StatefulSet-style) is recreated with a new IP; its old IP goes to y/intruder.
	x.DeletePod(key("y", "dual"))
	x.UpsertPod(pod("y", "dual", "10.0.1.50", withLabels("pod", "dual")))
	x.UpsertPod(pod("y", "intruder", "10.0.1.3", withLabels("pod", "intruder")))
	got := render(x.Compile(key("x", "p"), Options{}).Objects)
	t.Logf("after:  %v", got)
	// From scratch with the same objects.
	objs2 := objs
	objs2.Pods = nil
	for _, p := range objs.Pods {
		if p.Name != "dual" || p.Namespace != "y" {
			objs2.Pods = append(objs2.Pods, p)
		}
	}
	objs2.Pods = append(objs2.Pods, *pod("y", "dual", "10.0.1.50", withLabels("pod", "dual")), *pod("y", "intruder", "10.0.1.3", withLabels("pod", "intruder")))
	fresh := render(NewIndexOf(objs2).Compile(key("x", "p"), Options{}).Objects)
	t.Logf("fresh:  %v", fresh)
	if strings.Contains(strings.Join(got, ""), "10.96.0.11") {
		t.Errorf("ClusterIP 10.96.0.11 allowed although its only backend 10.0.1.3 is now y/intruder, not allowed by the policy")
	}
}

// Two live pods sharing an address (a stale pod on a lost node): deleting
// one keeps the address the other still holds.
func TestSharedAddressSurvivesOnePod(t *testing.T) {
	np := netpol("z", "p", sel("pod", "a"), ingressRule(nil, podPeer(sel("role", "c"), nil)))
	objs := Objects{Namespaces: world().Namespaces, NetworkPolicies: []networkingv1.NetworkPolicy{*np}}
	objs.Pods = []corev1.Pod{*pod("z", "a", "10.0.2.1"), *pod("z", "old", "10.0.2.9", withLabels("role", "c")), *pod("z", "new", "10.0.2.9", withLabels("role", "c"), onNode("node2"))}
	x := NewIndexOf(objs)
	t.Logf("before: %v", render(x.Compile(key("z", "p"), Options{}).Objects))
	x.DeletePod(key("z", "old"))
	got := render(x.Compile(key("z", "p"), Options{}).Objects)
	objs.Pods = []corev1.Pod{objs.Pods[0], objs.Pods[2]}
	fresh := render(NewIndexOf(objs).Compile(key("z", "p"), Options{}).Objects)
	if strings.Join(got, "") != strings.Join(fresh, "") || !strings.Contains(strings.Join(got, ""), "10.0.2.9/32") {
		t.Errorf("incremental %v\nfresh       %v", got, fresh)
	}
}

// A block, or a peer-less rule, holds no cluster IP by itself: egress is
// judged before kube-proxy's DNAT, so it would let the pod reach whichever
// backend the Service picks. A cluster IP is allowed only when the policy
// allows its backends.
func TestBlocksLeaveClusterIPsToTheirBackends(t *testing.T) {
	db := func(target int32) func(*Objects) {
		return func(o *Objects) {
			o.Services = append(o.Services, *service("y", "db", []string{"10.96.0.10"}, svcPort("sql", 443, intstr.FromInt32(target))))
			o.EndpointSlices = append(o.EndpointSlices,
				*endpointSlice("y", "db-v4", "db", discoveryv1.AddressTypeIPv4, "sql", target, "y/dual=10.0.1.3"))
		}
	}
	cases := []struct {
		name string
		svc  func(*Objects)
		rule func(*networkingv1.NetworkPolicySpec)
		want string
	}{
		{"internet only: the except holds the only backend", db(5432), egressRule(nil, ipPeer("0.0.0.0/0", "10.0.0.0/16")),
			"eg=[0.0.0.0/0!10.0.0.0/16!10.96.0.10/32]"},
		{"any destination on 443: the backend listens on 5432", db(5432), egressRule(ports(port(TCP, 443))),
			"eg=[0.0.0.0/0!10.96.0.10/32(TCP:443) ::/0(TCP:443)]"},
		{"any destination on 443: the backend listens on 443", db(443), egressRule(ports(port(TCP, 443))),
			"eg=[0.0.0.0/0!10.96.0.10/32(TCP:443) 10.96.0.10/32(TCP:443) ::/0(TCP:443)]"},
		{"a block of the backends", db(5432), egressRule(nil, ipPeer("10.0.1.0/24")),
			"eg=[10.0.1.0/24 10.96.0.10/32(TCP:443)]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := compileWorld(t, tc.svc, netpol("x", "p", sel("pod", "a"), egressOnly, tc.rule))
			if got := strings.Join(out, ""); !strings.Contains(got, tc.want) {
				t.Errorf("compiled %s\nwant %s", got, tc.want)
			}
		})
	}
}

// A block that would hold more cluster IPs than an entry holds excepts is
// split, and the pieces cover exactly the block without them.
func TestBlocksWithManyClusterIPsAreSplit(t *testing.T) {
	var ips []netip.Addr
	objs := world()
	for i := range 300 {
		ip := netip.AddrFrom4([4]byte{10, 96, byte(i * 7 % 256), byte(i*13%250 + 1)})
		ips = append(ips, ip)
		objs.Services = append(objs.Services, *service("y", fmt.Sprintf("s%d", i), []string{ip.String()}, svcPort("", 80, intstr.FromInt32(80))))
	}
	objs.NetworkPolicies = append(objs.NetworkPolicies, *netpol("x", "p", sel("pod", "a"), egressOnly,
		egressRule(nil, ipPeer("0.0.0.0/0", "10.0.0.0/16", "192.168.0.0/16"))))
	objects, _ := CompileAll(objs, Options{})
	if len(objects) != 1 {
		t.Fatalf("%d objects", len(objects))
	}
	entries := objects[0].Spec.Egress
	allowed := func(a netip.Addr) bool {
		for _, e := range entries {
			if p := netip.MustParsePrefix(string(e.CIDR)); !p.Contains(a) {
				continue
			}
			if !slices.ContainsFunc(e.Except, func(x v1alpha1.NetworkAddress) bool { return netip.MustParsePrefix(string(x)).Contains(a) }) {
				return true
			}
		}
		return false
	}
	for _, e := range entries {
		if len(e.Except) > v1alpha1.MaxExcepts {
			t.Errorf("entry %s has %d excepts", e.CIDR, len(e.Except))
		}
	}
	for _, ip := range ips {
		if allowed(ip) {
			t.Fatalf("cluster IP %s allowed by the block", ip)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	checked := 0
	for range 20000 {
		a := netip.AddrFrom4([4]byte{10, 96, byte(r.IntN(256)), byte(r.IntN(256))})
		if r.IntN(2) == 0 {
			a = netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		}
		want := !slices.Contains(ips, a) && !netip.MustParsePrefix("10.0.0.0/16").Contains(a) && !netip.MustParsePrefix("192.168.0.0/16").Contains(a)
		if allowed(a) != want {
			t.Fatalf("%s: allowed %v, want %v", a, allowed(a), want)
		}
		checked++
	}
	t.Logf("%d entries for a block without 300 cluster IPs; %d addresses checked", len(entries), checked)
}

// A revision names one way of splitting the spec: the same content split
// at another size gets another revision, so that chunks of two layouts
// never make a complete set.
func TestRevisionNamesTheChunkLayout(t *testing.T) {
	objs := bigNamespace(30)
	objs.NetworkPolicies = append(objs.NetworkPolicies, *netpol("big", "np", nil,
		ingressRule(ports(port(TCP, 80)), podPeer(sel(), nil)), egressRule(nil, podPeer(sel(), nil))))
	a, _ := CompileAll(objs, Options{MaxEntriesPerObject: 50})
	b, _ := CompileAll(objs, Options{MaxEntriesPerObject: 60})
	if len(a) != 2 || len(b) != 2 {
		t.Fatalf("%d and %d chunks, want 2 each", len(a), len(b))
	}
	if a[0].Spec.Chunk.Revision == b[0].Spec.Chunk.Revision {
		t.Errorf("both layouts have revision %s", a[0].Spec.Chunk.Revision)
	}
	for _, mixed := range [][]v1alpha1.PolicyEndpoint{{b[0], a[1]}, {a[0], b[1]}} {
		if _, _, complete := v1alpha1.CompleteRevision(mixed); complete {
			t.Errorf("chunks of two layouts make a complete set")
		}
	}
}

// A node name longer than a label value is hashed into the node label.
func TestLongNodeNamesFitTheNodeLabel(t *testing.T) {
	node := "ip-10-0-1-23." + strings.Repeat("x", 40) + ".compute.internal"
	objs := bigNamespace(1)
	objs.Pods[0].Spec.NodeName = node
	objs.NetworkPolicies = append(objs.NetworkPolicies, *netpol("big", "np", nil))
	out, _ := CompileAll(objs, Options{})
	if len(out) != 1 {
		t.Fatalf("%d objects", len(out))
	}
	label := out[0].Labels[v1alpha1.NodeLabel]
	if errs := validation.IsValidLabelValue(label); len(errs) != 0 || label != v1alpha1.LabelValue(node) || out[0].Spec.NodeName != node {
		t.Errorf("node label %q (%v), spec.nodeName %q", label, errs, out[0].Spec.NodeName)
	}
}

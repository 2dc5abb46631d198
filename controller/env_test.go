package controller

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller/compile"
	"github.com/palisade-net/palisade/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// testMaxEntries is small so that tests also exercise chunking.
const testMaxEntries = 6

// startController runs a controller against the package's shared
// apiserver until the test ends; tests work in namespaces of their own.
func startController(t testing.TB) (client.Client, *testenv.Env) {
	t.Helper()
	env := testenv.Shared(t)
	loggerOnce.Do(func() { ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel))) })
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:  env.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("palisade-controller"),
		Compile: compile.Options{MaxEntriesPerObject: testMaxEntries}, SkipNameValidation: true}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return env.Client, env
}

var loggerOnce sync.Once

// newNamespace creates a labelled namespace that the test deletes when done.
func newNamespace(t testing.TB, c client.Client, prefix string, kv ...string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels(kv...)}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
	return ns.Name
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

type podSpec struct {
	ns, name, node string
	labels         map[string]string
	ips            []string
	ports          []corev1.ContainerPort
	hostNetwork    bool
	phase          corev1.PodPhase
}

// createPod creates a pod and, as a kubelet would, reports its IPs.
func createPod(t testing.TB, c client.Client, p podSpec) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: p.labels},
		Spec: corev1.PodSpec{NodeName: p.node, HostNetwork: p.hostNetwork,
			Containers: []corev1.Container{{Name: "c", Image: "example.invalid/app", Ports: p.ports}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if len(p.ips) > 0 {
		setPodIPs(t, c, pod, p.phase, p.ips...)
	}
	return pod
}

func setPodIPs(t testing.TB, c client.Client, pod *corev1.Pod, phase corev1.PodPhase, ips ...string) {
	t.Helper()
	if phase == "" {
		phase = corev1.PodRunning
	}
	pod.Status.Phase = phase
	pod.Status.HostIP = "192.168.0.1"
	pod.Status.HostIPs = []corev1.HostIP{{IP: "192.168.0.1"}}
	pod.Status.PodIPs = nil
	for _, ip := range ips {
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	pod.Status.PodIP = ips[0]
	if err := c.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
}

func createService(t testing.TB, c client.Client, ns, name string, port int32, target intstr.IntOrString) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Protocol: corev1.ProtocolTCP, Port: port, TargetPort: target}}},
	}
	if err := c.Create(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	return svc
}

// createSlice creates an EndpointSlice for service port "web" -> number.
func createSlice(t testing.TB, c client.Client, ns, name, svc string, number int32, pods ...*corev1.Pod) *discoveryv1.EndpointSlice {
	t.Helper()
	portName, tcp := "web", corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Protocol: &tcp, Port: &number}},
	}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{p.Status.PodIP},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name},
		})
	}
	if err := c.Create(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	return es
}

// listPolicyEndpoints lists a policy's objects.
func listPolicyEndpoints(t testing.TB, c client.Client, ns, policy string) []v1alpha1.PolicyEndpoint {
	t.Helper()
	var list v1alpha1.PolicyEndpointList
	if err := c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.PolicyNameLabel: policy}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// renderAssembled renders a policy's objects after reassembling chunk sets,
// as an agent would: one line per logical object.
func renderAssembled(objects []v1alpha1.PolicyEndpoint) []string {
	sets := map[string][]v1alpha1.PolicyEndpoint{}
	for _, o := range objects {
		set := o.Name
		if o.Spec.Chunk != nil {
			set = o.Spec.Chunk.Set
		}
		sets[set] = append(sets[set], o)
	}
	var out []string
	for _, objs := range sets {
		spec, _, ok := v1alpha1.CompleteRevision(objs)
		if !ok {
			out = append(out, "incomplete chunk set")
			continue
		}
		out = append(out, renderSpec(spec))
	}
	sort.Strings(out)
	return out
}

func renderSpec(s v1alpha1.PolicyEndpointSpec) string {
	var pods []string
	for _, p := range s.PodSelectorEndpoints {
		pods = append(pods, p.Name+"@"+string(p.PodIP))
	}
	sort.Strings(pods)
	return fmt.Sprintf("node=%s iso=%v pods=[%s] in=%s eg=%s", s.NodeName, s.PodIsolation, strings.Join(pods, " "), renderEntries(s.Ingress), renderEntries(s.Egress))
}

func renderEntries(entries []v1alpha1.EndpointInfo) string {
	var parts []string
	for _, e := range entries {
		s := string(e.CIDR)
		for _, x := range e.Except {
			s += "!" + string(x)
		}
		if e.Ports != nil {
			var ps []string
			for _, p := range e.Ports {
				q := string(*p.Protocol)
				if p.Port != nil {
					q += fmt.Sprintf(":%d", *p.Port)
				}
				if p.EndPort != nil {
					q += fmt.Sprintf("-%d", *p.EndPort)
				}
				ps = append(ps, q)
			}
			s += "(" + strings.Join(ps, ",") + ")"
		}
		parts = append(parts, s)
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

// eventually waits until the policy's objects render as want.
func eventually(t testing.TB, c client.Client, ns, policy string, want ...string) time.Duration {
	t.Helper()
	sort.Strings(want)
	start := time.Now()
	var got []string
	for time.Since(start) < 20*time.Second {
		got = renderAssembled(listPolicyEndpoints(t, c, ns, policy))
		if slices.Equal(got, want) {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("policy %s/%s objects:\n  %s\nwant:\n  %s", ns, policy, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	return 0
}

func create(t testing.TB, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func netpol(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func sel(kv ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labels(kv...)}
}

func tcpPort(p any) networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	var v intstr.IntOrString
	switch x := p.(type) {
	case int:
		v = intstr.FromInt32(int32(x))
	case string:
		v = intstr.FromString(x)
	}
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &v}
}

package compile

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	benchNamespaces     = 100
	benchPodsPerNS      = 100
	benchAppsPerNS      = 10
	benchNodes          = 50
	benchPoliciesPerNS  = 10
	benchTeams          = 10
	benchPodsPerService = benchPodsPerNS / benchAppsPerNS
)

var tiers = []string{"frontend", "backend", "db"}

// benchCluster is 10,000 pods in 100 namespaces on 50 nodes, a Service per
// app, and 1,000 policies mixing the usual shapes: default deny, app to
// app, cross-namespace by team with named ports, egress with ipBlock
// except, matchExpressions, and monitoring access.
func benchCluster() Objects {
	var objs Objects
	for n := range benchNamespaces {
		name := fmt.Sprintf("ns%03d", n)
		env := "prod"
		if n%3 == 0 {
			env = "dev"
		}
		objs.Namespaces = append(objs.Namespaces, *namespace(name, "team", fmt.Sprintf("team%d", n%benchTeams), "env", env))
		for p := range benchPodsPerNS {
			i := n*benchPodsPerNS + p
			app := fmt.Sprintf("app%d", p%benchAppsPerNS)
			objs.Pods = append(objs.Pods, *pod(name, fmt.Sprintf("pod%d", p), fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256),
				withLabels("app", app, "tier", tiers[p%3]), onNode(fmt.Sprintf("node%d", i%benchNodes)),
				withPort("http", TCP, int32(8080+p%2)), withPort("metrics", TCP, 9090)))
		}
		for a := range benchAppsPerNS {
			app := fmt.Sprintf("app%d", a)
			i := n*benchAppsPerNS + a
			objs.Services = append(objs.Services, *service(name, app, []string{fmt.Sprintf("10.96.%d.%d", i/256, i%256)}, svcPort("web", 80, intstr.FromString("http"))))
			var backends []string
			for p := a; p < benchPodsPerNS; p += benchAppsPerNS {
				j := n*benchPodsPerNS + p
				backends = append(backends, fmt.Sprintf("%s/pod%d=10.%d.%d.%d", name, p, 100+j/65536, j/256%256, j%256))
			}
			objs.EndpointSlices = append(objs.EndpointSlices, *endpointSlice(name, app+"-1", app, discoveryv1.AddressTypeIPv4, "web", 8080, backends...))
		}
		for k := range benchPoliciesPerNS {
			objs.NetworkPolicies = append(objs.NetworkPolicies, *benchPolicy(name, n, k))
		}
	}
	return objs
}

func benchPolicy(ns string, n, k int) *networkingv1.NetworkPolicy {
	name := fmt.Sprintf("np%d", k)
	app := func(i int) *metav1.LabelSelector { return sel("app", fmt.Sprintf("app%d", i%benchAppsPerNS)) }
	switch k {
	case 0:
		return netpol(ns, name, nil)
	case 1, 2, 3, 4:
		return netpol(ns, name, app(k), ingressRule(ports(port(TCP, 8080)), podPeer(app(k+1), nil)))
	case 5, 6:
		return netpol(ns, name, sel("tier", "backend"), ingressRule(ports(port(TCP, "http")),
			podPeer(sel("tier", "frontend"), sel("team", fmt.Sprintf("team%d", (n+k)%benchTeams)))))
	case 7:
		return netpol(ns, name, sel("tier", "frontend"), egressOnly,
			egressRule(ports(port(TCP, "http")), podPeer(sel("tier", "backend"), nil)),
			egressRule(ports(port(TCP, 443)), ipPeer("0.0.0.0/0", "10.0.0.0/8")))
	case 8:
		return netpol(ns, name, expr("app", metav1.LabelSelectorOpIn, "app1", "app2", "app3"),
			ingressRule(ports(portRange(TCP, 8000, 8100)), podPeer(expr("tier", metav1.LabelSelectorOpNotIn, "db"), expr("env", metav1.LabelSelectorOpNotIn, "dev"))))
	default:
		return netpol(ns, name, sel(), ingressRule(ports(port(TCP, "metrics")), podPeer(nil, sel("team", "team0"))))
	}
}

func BenchmarkCompileFromScratch(b *testing.B) {
	objs := benchCluster()
	b.ResetTimer()
	var objects, entries int
	cpu := startCPUClock()
	for b.Loop() {
		out, _ := CompileAll(objs, Options{})
		objects, entries = len(out), 0
		for _, o := range out {
			entries += len(o.Spec.PodSelectorEndpoints) + len(o.Spec.Ingress) + len(o.Spec.Egress)
		}
	}
	cpu.report(b)
	b.ReportMetric(float64(objects), "objects")
	b.ReportMetric(float64(entries), "entries")
}

func BenchmarkSinglePodChange(b *testing.B) {
	objs := benchCluster()
	x := NewIndexOf(objs)
	for k := range x.Policies() {
		x.Compile(k, Options{})
	}
	original := objs.Pods[4242].DeepCopy()
	relabeled := original.DeepCopy()
	relabeled.Labels["app"] = "app9"
	relabeled.Labels["tier"] = "frontend"
	var affected int
	b.ResetTimer()
	cpu := startCPUClock()
	for i := 0; b.Loop(); i++ {
		p := relabeled
		if i%2 == 1 {
			p = original
		}
		keys := x.UpsertPod(p)
		affected = len(keys)
		for k := range keys {
			x.Compile(k, Options{})
		}
	}
	cpu.report(b)
	b.ReportMetric(float64(affected), "policies/op")
}

var _ = corev1.ProtocolTCP

// cpuClock measures the process's CPU time, which unlike wall time does not
// grow when other processes compete for the cores.
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPUClock() cpuClock { return cpuClock{processCPU()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-c.start)/float64(b.N), "cpu-ns/op")
}

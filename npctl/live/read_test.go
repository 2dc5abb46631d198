package live_test

import (
	"context"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/internal/testenv"
	"github.com/palisade-net/palisade/npctl/live"
	"github.com/palisade-net/palisade/npctl/manifest"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
)

func loadScenario(t *testing.T) *manifest.Objects {
	t.Helper()
	f, err := os.Open("../cli/testdata/ingress-from-namespace.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := manifest.Load("ingress-from-namespace.yaml", f)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// cluster creates objs, a pending pod without IP, and the given
// PolicyEndpoints on a real kube-apiserver of its own.
func cluster(t *testing.T, objs *manifest.Objects, pes []client.Object) client.Client {
	t.Helper()
	env := testenv.Start(t)
	c := env.Client
	ctx := context.Background()
	create := func(o client.Object) {
		t.Helper()
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %s/%s: %v", o.GetNamespace(), o.GetName(), err)
		}
	}
	for i := range objs.Namespaces {
		create(objs.Namespaces[i].DeepCopy())
	}
	for i := range objs.Pods {
		pod := objs.Pods[i].DeepCopy()
		status := pod.Status
		create(pod)
		pod.Status = status
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatalf("pod %s/%s status: %v", pod.Namespace, pod.Name, err)
		}
	}
	uids := map[string]types.UID{}
	for i := range objs.NetworkPolicies {
		np := objs.NetworkPolicies[i].DeepCopy()
		create(np)
		uids[np.Namespace+"/"+np.Name] = np.UID
	}
	create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "y", Name: "pending", Labels: map[string]string{"pod": "a"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "agnhost"}}},
	})
	for _, pe := range pes {
		owners := pe.GetOwnerReferences()
		for i := range owners {
			owners[i].UID = uids[pe.GetNamespace()+"/"+owners[i].Name]
		}
		pe.SetOwnerReferences(owners)
		create(pe)
	}
	return c
}

func outcomes(t *testing.T, m *simulate.Model, objs *manifest.Objects) map[string]bool {
	t.Helper()
	probes, err := probe.Plan(objs, probe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Run(simulate.Reference{}, probes)
	if err != nil {
		t.Fatal(err)
	}
	verdicts := map[string]bool{}
	for _, o := range out {
		verdicts[o.Probe.String()] = o.Allowed
	}
	return verdicts
}

// A cluster holding the PolicyEndpoints the controller compiles gives the
// same verdicts live as the offline simulation; pods without an IP are
// left out.
func TestLiveMatchesOfflineWhenTheControllerIsUpToDate(t *testing.T) {
	offline := loadScenario(t)
	want, err := simulate.Build(offline)
	if err != nil {
		t.Fatal(err)
	}
	var pes []client.Object
	for i := range want.PolicyEndpoints {
		pes = append(pes, want.PolicyEndpoints[i].DeepCopy())
	}
	objs, read, err := live.Read(context.Background(), cluster(t, loadScenario(t), pes))
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != len(want.PolicyEndpoints) || len(objs.Pods) != len(offline.Pods) {
		t.Fatalf("read %d PolicyEndpoints and %d pods, want %d and %d (the pending pod skipped)",
			len(read), len(objs.Pods), len(want.PolicyEndpoints), len(offline.Pods))
	}
	got, err := simulate.Assemble(objs, read, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, w := outcomes(t, got, objs), outcomes(t, want, offline)
	denied := 0
	for p, allowed := range w {
		if g[p] != allowed {
			t.Errorf("%s: live allowed=%v, offline %v", p, g[p], allowed)
		}
		if !allowed {
			denied++
		}
	}
	if len(g) != len(w) || denied == 0 {
		t.Errorf("%d live and %d offline probes, %d denied", len(g), len(w), denied)
	}
}

// Live, explain shows what the agents enforce: before the controller has
// written PolicyEndpoints, the NetworkPolicies isolate their pods and allow
// nothing.
func TestLiveWithoutPolicyEndpointsIsClosed(t *testing.T) {
	objs, pes, err := live.Read(context.Background(), cluster(t, loadScenario(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	m, err := simulate.Assemble(objs, pes, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := probe.ParsePod("x/a")
	dst, _ := probe.ParsePod("y/b")
	probes, err := probe.Plan(objs, probe.Options{From: []string{src.String()}, To: []string{dst.String()}, Ports: []probe.Port{{Protocol: corev1.ProtocolTCP, Port: 80}}})
	if err != nil || len(probes) != 1 {
		t.Fatalf("%d probes, %v", len(probes), err)
	}
	o, err := m.Judge(simulate.Reference{}, probes[0])
	if err != nil {
		t.Fatal(err)
	}
	if o.Allowed || !o.Ingress.Policed {
		t.Errorf("x/a -> y/b TCP/80 allowed=%v policed=%v: want denied by isolation alone", o.Allowed, o.Ingress.Policed)
	}
}

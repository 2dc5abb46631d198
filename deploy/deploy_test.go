package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/palisade-net/palisade/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const fieldOwner = client.FieldOwner("palisade-deploy-test")

// kustomization is the subset of a Kustomization the manifests may use.
// Reading it strictly keeps `kubectl apply -k` equal to applying the listed
// files in order, which is what these tests do.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml may only list resources: %v", dir, err)
	}
	return k
}

func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var objects []*unstructured.Unstructured
	decoder := utilyaml.NewYAMLOrJSONDecoder(file, 4096)
	for {
		var content map[string]any
		if err := decoder.Decode(&content); errors.Is(err, io.EOF) {
			return objects
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(content) == 0 {
			continue
		}
		objects = append(objects, &unstructured.Unstructured{Object: content})
	}
}

// baseObjects returns the objects `kubectl apply -k deploy/` applies, in order.
func baseObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	var objects []*unstructured.Unstructured
	for _, resource := range readKustomization(t, ".").Resources {
		objects = append(objects, readObjects(t, resource)...)
	}
	return objects
}

func describe(obj *unstructured.Unstructured) string {
	if obj.GetNamespace() == "" {
		return fmt.Sprintf("%s %s", obj.GetKind(), obj.GetName())
	}
	return fmt.Sprintf("%s %s/%s", obj.GetKind(), obj.GetNamespace(), obj.GetName())
}

func find(t *testing.T, objects []*unstructured.Unstructured, kind, name string, into any) {
	t.Helper()
	for _, obj := range objects {
		if obj.GetKind() == kind && obj.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, into, true); err != nil {
				t.Fatalf("%s: %v", describe(obj), err)
			}
			return
		}
	}
	t.Fatalf("no %s %s in the manifests", kind, name)
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	base := readKustomization(t, ".")
	if base.Kind != "Kustomization" {
		t.Errorf("deploy/kustomization.yaml kind = %q, want Kustomization", base.Kind)
	}
	manifests, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	crds, err := filepath.Glob("crd/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(crds) == 0 {
		t.Error("deploy/crd holds no manifest: run `make generate-api`")
	}
	for _, manifest := range append(manifests, crds...) {
		if manifest != "kustomization.yaml" && !slices.Contains(base.Resources, manifest) {
			t.Errorf("%s is not listed in deploy/kustomization.yaml", manifest)
		}
	}
	for _, resource := range base.Resources {
		if len(readObjects(t, resource)) == 0 {
			t.Errorf("%s holds no object", resource)
		}
	}

	monitoring := readKustomization(t, "monitoring")
	if monitoring.Kind != "Component" {
		t.Errorf("deploy/monitoring kind = %q, want Component", monitoring.Kind)
	}
	for _, resource := range monitoring.Resources {
		for _, obj := range readObjects(t, filepath.Join("monitoring", resource)) {
			if obj.GetKind() != "ServiceMonitor" {
				t.Errorf("monitoring/%s: %s; the component is for Prometheus Operator objects only", resource, describe(obj))
			}
		}
	}
}

// createNamespaces creates the manifests' namespaces for real: the server
// validates a namespaced object only if its namespace exists, and a dry run
// creates nothing.
func createNamespaces(t *testing.T, c client.Client, objects []*unstructured.Unstructured) {
	t.Helper()
	for _, obj := range objects {
		if obj.GetKind() == "Namespace" {
			if err := c.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(obj.DeepCopy()),
				fieldOwner, client.ForceOwnership); err != nil {
				t.Fatalf("%s: %v", describe(obj), err)
			}
		}
	}
}

func TestManifestsPassServerSideDryRun(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	objects := baseObjects(t)
	createNamespaces(t, env.Client, objects)

	for _, obj := range objects {
		err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()),
			fieldOwner, client.ForceOwnership, client.DryRunAll)
		if err != nil {
			t.Errorf("%s: %v", describe(obj), err)
		}
	}

	var deployment appsv1.Deployment
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: "palisade-system", Name: "palisade-controller"}, &deployment)
	if !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run, getting the controller Deployment: err = %v, want NotFound", err)
	}
}

// TestServerSideDryRunRejectsAnInvalidManifest shows that the dry run above
// validates: the same agent DaemonSet with an out-of-range port is refused.
func TestServerSideDryRunRejectsAnInvalidManifest(t *testing.T) {
	env := testenv.Shared(t)
	objects := baseObjects(t)
	createNamespaces(t, env.Client, objects)
	var agent *unstructured.Unstructured
	for _, obj := range objects {
		if obj.GetKind() == "DaemonSet" {
			agent = obj.DeepCopy()
		}
	}
	if agent == nil {
		t.Fatal("no DaemonSet in the manifests")
	}
	containers, _, _ := unstructured.NestedSlice(agent.Object, "spec", "template", "spec", "containers")
	ports := containers[0].(map[string]any)["ports"].([]any)
	ports[0].(map[string]any)["containerPort"] = int64(70000)
	if err := unstructured.SetNestedSlice(agent.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}

	err := env.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(agent),
		fieldOwner, client.ForceOwnership, client.DryRunAll)
	if !apierrors.IsInvalid(err) {
		t.Fatalf("dry run of a DaemonSet with containerPort 70000: err = %v, want Invalid", err)
	}
}

func TestAgentDaemonSet(t *testing.T) {
	objects := baseObjects(t)
	var agent appsv1.DaemonSet
	find(t, objects, "DaemonSet", "palisade-agent", &agent)
	var config corev1.ConfigMap
	find(t, objects, "ConfigMap", "palisade-config", &config)
	var account corev1.ServiceAccount
	find(t, objects, "ServiceAccount", agent.Spec.Template.Spec.ServiceAccountName, &account)

	pod := agent.Spec.Template.Spec
	if !pod.HostNetwork {
		t.Error("the agent must run on the host network")
	}
	if pod.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector = %v, want kubernetes.io/os=linux", pod.NodeSelector)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(t corev1.Toleration) bool {
		return t.Operator == corev1.TolerationOpExists && t.Key == "" && t.Effect == ""
	}) {
		t.Errorf("tolerations = %v, want one tolerating every taint", pod.Tolerations)
	}
	excludesFargate := false
	if affinity := pod.Affinity; affinity != nil && affinity.NodeAffinity != nil &&
		affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for _, term := range affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, expression := range term.MatchExpressions {
				excludesFargate = excludesFargate || expression.Key == "eks.amazonaws.com/compute-type" &&
					expression.Operator == corev1.NodeSelectorOpNotIn && slices.Contains(expression.Values, "fargate")
			}
		}
	}
	if !excludesFargate {
		t.Error("the agent's node affinity must exclude eks.amazonaws.com/compute-type=fargate")
	}

	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	container := pod.Containers[0]
	security := container.SecurityContext
	if security == nil || security.Capabilities == nil {
		t.Fatal("the agent container has no capabilities set")
	}
	if security.Privileged != nil && *security.Privileged {
		t.Error("the agent must not be privileged")
	}
	if !slices.Equal(security.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities dropped = %v, want [ALL]", security.Capabilities.Drop)
	}
	added := slices.Clone(security.Capabilities.Add)
	slices.Sort(added)
	if want := []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"}; !slices.Equal(added, want) {
		t.Errorf("capabilities added = %v, want %v", added, want)
	}

	bpffsVolume := ""
	for _, volume := range pod.Volumes {
		if volume.HostPath != nil && volume.HostPath.Path == "/sys/fs/bpf" {
			bpffsVolume = volume.Name
		}
	}
	if !slices.ContainsFunc(container.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == bpffsVolume && m.MountPath == "/sys/fs/bpf"
	}) {
		t.Error("the host's /sys/fs/bpf must be mounted at /sys/fs/bpf")
	}

	env := map[string]corev1.EnvVar{}
	for _, variable := range container.Env {
		env[variable.Name] = variable
		if ref := variable.ValueFrom; ref != nil && ref.ConfigMapKeyRef != nil {
			if ref.ConfigMapKeyRef.Name != config.Name {
				t.Errorf("%s reads ConfigMap %s, want %s", variable.Name, ref.ConfigMapKeyRef.Name, config.Name)
			} else if _, ok := config.Data[ref.ConfigMapKeyRef.Key]; !ok {
				t.Errorf("%s reads key %q, which %s lacks", variable.Name, ref.ConfigMapKeyRef.Key, config.Name)
			}
		}
	}
	if ref := env["NODE_NAME"].ValueFrom; ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("NODE_NAME must come from the downward API's spec.nodeName")
	}
	if mode := config.Data["mode"]; mode != "strict" && mode != "standard" {
		t.Errorf("palisade-config mode = %q, want strict or standard", mode)
	}
	checkArgs(t, container, env, "--node-name=$(NODE_NAME)", "--mode=", "--flow-logs=",
		"--metrics-bind-address=:8090", "--health-probe-bind-address=:8091")
	checkPorts(t, objects, agent.Spec.Template.Labels, container)
}

func TestControllerDeployment(t *testing.T) {
	objects := baseObjects(t)
	var controller appsv1.Deployment
	find(t, objects, "Deployment", "palisade-controller", &controller)
	var account corev1.ServiceAccount
	find(t, objects, "ServiceAccount", controller.Spec.Template.Spec.ServiceAccountName, &account)

	if controller.Spec.Replicas == nil || *controller.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", controller.Spec.Replicas)
	}
	if len(controller.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(controller.Spec.Template.Spec.Containers))
	}
	container := controller.Spec.Template.Spec.Containers[0]
	checkArgs(t, container, nil, "--leader-elect", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081")
	podSecurity := controller.Spec.Template.Spec.SecurityContext
	if podSecurity == nil || podSecurity.RunAsNonRoot == nil || !*podSecurity.RunAsNonRoot {
		t.Error("the controller must run as non-root")
	}
	checkPorts(t, objects, controller.Spec.Template.Labels, container)
}

// checkArgs wants each of wanted to prefix an argument, and every $(VAR) in
// the arguments to be a variable of env.
func checkArgs(t *testing.T, container corev1.Container, env map[string]corev1.EnvVar, wanted ...string) {
	t.Helper()
	for _, want := range wanted {
		if !slices.ContainsFunc(container.Args, func(arg string) bool { return strings.HasPrefix(arg, want) }) {
			t.Errorf("%s args %v lack %s", container.Name, container.Args, want)
		}
	}
	for _, arg := range container.Args {
		for rest := arg; strings.Contains(rest, "$("); {
			rest = rest[strings.Index(rest, "$(")+2:]
			name, _, _ := strings.Cut(rest, ")")
			if _, ok := env[name]; !ok {
				t.Errorf("%s arg %q refers to $(%s), which is not in its env", container.Name, arg, name)
			}
		}
	}
}

// checkPorts wants a Service selecting the pod labels whose target ports
// the container declares, and the probes' ports declared too.
func checkPorts(t *testing.T, objects []*unstructured.Unstructured, podLabels map[string]string, container corev1.Container) {
	t.Helper()
	declared := map[string]bool{}
	for _, port := range container.Ports {
		declared[port.Name] = true
	}
	for _, probe := range []*corev1.Probe{container.LivenessProbe, container.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil || !declared[probe.HTTPGet.Port.String()] {
			t.Errorf("%s: probe %v must be an HTTP GET on a declared port", container.Name, probe)
		}
	}
	services := 0
	for _, obj := range objects {
		if obj.GetKind() != "Service" {
			continue
		}
		var service corev1.Service
		find(t, []*unstructured.Unstructured{obj}, "Service", obj.GetName(), &service)
		selects := len(service.Spec.Selector) > 0
		for key, value := range service.Spec.Selector {
			selects = selects && podLabels[key] == value
		}
		if !selects {
			continue
		}
		services++
		for _, port := range service.Spec.Ports {
			if !declared[port.TargetPort.String()] {
				t.Errorf("Service %s targets port %s, which %s does not declare", service.Name, port.TargetPort.String(), container.Name)
			}
		}
	}
	if services != 1 {
		t.Errorf("%d Services select the %s pods, want 1 (metrics)", services, container.Name)
	}
}

func waitFor(t *testing.T, what string, condition func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		done, err := condition()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after 20s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServiceMonitorsSelectTheMetricsServices checks the optional
// monitoring component against the base, since the test apiserver lacks the
// Prometheus Operator's CRDs.
func TestServiceMonitorsSelectTheMetricsServices(t *testing.T) {
	base := baseObjects(t)
	monitored := map[string]bool{}
	for _, resource := range readKustomization(t, "monitoring").Resources {
		for _, monitor := range readObjects(t, filepath.Join("monitoring", resource)) {
			if monitor.GetNamespace() != "palisade-system" {
				t.Errorf("%s: namespace %q, want palisade-system", describe(monitor), monitor.GetNamespace())
			}
			selector, _, _ := unstructured.NestedStringMap(monitor.Object, "spec", "selector", "matchLabels")
			endpoints, _, _ := unstructured.NestedSlice(monitor.Object, "spec", "endpoints")
			var selected []corev1.Service
			for _, obj := range base {
				if obj.GetKind() != "Service" || len(selector) == 0 {
					continue
				}
				matches := true
				for key, value := range selector {
					matches = matches && obj.GetLabels()[key] == value
				}
				if matches {
					var service corev1.Service
					find(t, []*unstructured.Unstructured{obj}, "Service", obj.GetName(), &service)
					selected = append(selected, service)
				}
			}
			if len(selected) != 1 {
				t.Errorf("%s selects %d Services, want 1", describe(monitor), len(selected))
				continue
			}
			monitored[selected[0].Name] = true
			for _, endpoint := range endpoints {
				port, _ := endpoint.(map[string]any)["port"].(string)
				if !slices.ContainsFunc(selected[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
					t.Errorf("%s scrapes port %q, which Service %s lacks", describe(monitor), port, selected[0].Name)
				}
			}
		}
	}
	for _, obj := range base {
		if obj.GetKind() == "Service" && !monitored[obj.GetName()] {
			t.Errorf("no ServiceMonitor scrapes Service %s", obj.GetName())
		}
	}
}

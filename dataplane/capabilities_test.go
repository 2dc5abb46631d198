package dataplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/palisade-net/palisade/policy"
)

// agentCapabilities returns the capabilities deploy/agent.yaml grants the
// agent container, for setpriv (lower case).
func agentCapabilities(t *testing.T) []string {
	t.Helper()
	manifest, err := os.ReadFile(filepath.Join("..", "deploy", "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		SecurityContext struct {
			Capabilities struct{ Add []string }
		} `json:"securityContext"`
	}
	for _, doc := range strings.Split(string(manifest), "\n---") {
		var object struct {
			Kind string
			Spec struct {
				Template struct {
					Spec struct{ Containers []container }
				}
			}
		}
		if err := yaml.Unmarshal([]byte(doc), &object); err != nil || object.Kind != "DaemonSet" {
			continue
		}
		for _, c := range object.Spec.Template.Spec.Containers {
			if add := c.SecurityContext.Capabilities.Add; len(add) > 0 {
				var caps []string
				for _, capability := range add {
					caps = append(caps, strings.ToLower(capability))
				}
				return caps
			}
		}
	}
	t.Fatal("no capabilities added to a container of the DaemonSet in deploy/agent.yaml")
	return nil
}

// TestWorksWithTheAgentsCapabilities runs the dataplane's whole life in a
// process holding only the capabilities the DaemonSet grants the agent:
// open, attach, set, replace and remove policies, and open the pins again.
func TestWorksWithTheAgentsCapabilities(t *testing.T) {
	ensureBPFFS(t)
	caps := agentCapabilities(t)
	cfg := Config{PinPath: filepath.Join(bpffs, randomName("palisade-caps-")), ConntrackSize: 1024, MaxEndpoints: 16}
	t.Cleanup(func() {
		if d, err := Open(cfg); err == nil {
			d.Purge()
		}
		os.RemoveAll(cfg.PinPath)
	})
	ifindex := dummyLink(t)
	cmd := exec.Command("setpriv", "--bounding-set=-all,+"+strings.Join(caps, ",+"), "--inh-caps=-all",
		os.Args[0], "-test.run=^TestAgentCapabilitiesChild$", "-test.v")
	cmd.Env = append(os.Environ(), "PALISADE_CAPS_PIN="+cfg.PinPath, "PALISADE_CAPS_IFINDEX="+strconv.Itoa(ifindex))
	out, err := cmd.CombinedOutput()
	t.Logf("with %v:\n%s", caps, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestAgentCapabilitiesChild") {
		t.Fatalf("dataplane under the agent's capabilities: %v", err)
	}
}

// TestAgentCapabilitiesChild is TestWorksWithTheAgentsCapabilities' child.
func TestAgentCapabilitiesChild(t *testing.T) {
	pin := os.Getenv("PALISADE_CAPS_PIN")
	if pin == "" {
		t.Skip("run by TestWorksWithTheAgentsCapabilities")
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			effective, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			const capSysAdmin = 21
			if effective&(1<<capSysAdmin) != 0 {
				t.Fatalf("the child holds CAP_SYS_ADMIN (CapEff %x)", effective)
			}
		}
	}
	ifindex, err := strconv.Atoi(os.Getenv("PALISADE_CAPS_IFINDEX"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{PinPath: pin, ConntrackSize: 1024, MaxEndpoints: 16}
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	d, err := Open(cfg)
	step("open", err)
	step("attach", d.Attach(ifindex))
	for i := range 3 {
		ep := webPolicy()
		ep.Ingress.Rules[0].ID = uint32(100 + i)
		_, err := d.SetPolicy(ifindex, ep)
		step(fmt.Sprintf("set policy %d", i), err)
	}
	step("remove policy", d.RemovePolicy(ifindex))
	_, err = d.SetPolicy(ifindex, &policy.Endpoint{Egress: policy.Direction{Isolated: true}})
	step("set policy after removal", err)
	step("close", d.Close())
	d, err = Open(cfg)
	step("open the pins again", err)
	_, err = d.SetPolicy(ifindex, webPolicy())
	step("set policy after reopening", err)
	step("detach", d.Detach(ifindex))
	step("close again", d.Close())
}

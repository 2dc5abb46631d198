package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const imagePrefix = "ghcr.io/palisade-net/palisade-"

// commandOf maps a container to the command (cmd/<name>) its image holds.
func commandOf(t *testing.T, container corev1.Container) string {
	t.Helper()
	image, _, _ := strings.Cut(container.Image, ":")
	name, ok := strings.CutPrefix(image, imagePrefix)
	if !ok {
		t.Fatalf("container %s: image %q is not %s<command>", container.Name, container.Image, imagePrefix)
	}
	return name
}

var usageFlag = regexp.MustCompile(`(?m)^\s+--?([a-zA-Z0-9][a-zA-Z0-9_-]*)`)

// binaryFlags builds cmd/<command> and returns the flags its -h lists.
func binaryFlags(t *testing.T, command string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	binary := filepath.Join(t.TempDir(), command)
	build := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/"+command)
	build.Dir = ".."
	if output, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/%s: %v\n%s", command, err, output)
	}
	usage, _ := exec.CommandContext(ctx, binary, "-h").CombinedOutput() // -h exits 0 or 2 by flag package
	flags := map[string]bool{}
	for _, match := range usageFlag.FindAllStringSubmatch(string(usage), -1) {
		flags[match[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("cmd/%s -h lists no flags:\n%s", command, usage)
	}
	return flags
}

func TestManifestArgumentsAreFlagsOfTheBinaries(t *testing.T) {
	objects := baseObjects(t)
	var controller appsv1.Deployment
	find(t, objects, "Deployment", "palisade-controller", &controller)
	var agent appsv1.DaemonSet
	find(t, objects, "DaemonSet", "palisade-agent", &agent)

	for _, container := range append(controller.Spec.Template.Spec.Containers, agent.Spec.Template.Spec.Containers...) {
		command := commandOf(t, container)
		flags := binaryFlags(t, command)
		for _, arg := range container.Args {
			name, isFlag := strings.CutPrefix(arg, "--")
			name, _, _ = strings.Cut(name, "=")
			if !isFlag || !flags[name] {
				t.Errorf("container %s passes %q, which is not a flag of cmd/%s", container.Name, arg, command)
			}
		}
	}
}

func TestDockerfilesBuildTheCommands(t *testing.T) {
	dockerfiles, err := filepath.Glob("images/*.Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]bool{}
	for _, dockerfile := range dockerfiles {
		command := strings.TrimSuffix(filepath.Base(dockerfile), ".Dockerfile")
		built[command] = true
		content, err := os.ReadFile(dockerfile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(content), " ./cmd/"+command+"\n") {
			t.Errorf("%s does not build ./cmd/%s", dockerfile, command)
		}
		if info, err := os.Stat(filepath.Join("..", "cmd", command)); err != nil || !info.IsDir() {
			t.Errorf("%s builds ./cmd/%s, which does not exist", dockerfile, command)
		}
		var stages []string
		for _, line := range strings.Split(string(content), "\n") {
			if fields := strings.Fields(line); len(fields) > 1 && fields[0] == "FROM" {
				stages = append(stages, fields[len(fields)-1])
				if fields[len(fields)-2] == "AS" {
					stages[len(stages)-1] = fields[len(fields)-3]
				}
			}
		}
		if len(stages) < 2 || !strings.HasPrefix(stages[len(stages)-1], "gcr.io/distroless/static") {
			t.Errorf("%s: stages %v, want a build stage and a final gcr.io/distroless/static stage", dockerfile, stages)
		}
	}
	for _, command := range []string{"controller", "agent", "npctl"} {
		if !built[command] {
			t.Errorf("no images/%s.Dockerfile", command)
		}
	}

	objects := baseObjects(t)
	for _, obj := range objects {
		images, _, _ := workloadImages(obj)
		for _, image := range images {
			name, _, _ := strings.Cut(strings.TrimPrefix(image, imagePrefix), ":")
			if !built[name] {
				t.Errorf("%s runs image %s, which no images/*.Dockerfile builds", describe(obj), image)
			}
		}
	}
}

// workloadImages returns the images of a workload's pod template.
func workloadImages(obj *unstructured.Unstructured) ([]string, bool, error) {
	containers, found, err := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
	if !found || err != nil {
		return nil, found, err
	}
	var images []string
	for _, container := range containers {
		if image, ok := container.(map[string]any)["image"].(string); ok {
			images = append(images, image)
		}
	}
	return images, true, nil
}

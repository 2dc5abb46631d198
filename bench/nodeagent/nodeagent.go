// Package nodeagent measures the real agent binary on a local cluster
// (test/localcluster: kube-apiserver, the controller and the agent as
// processes, pods as network namespaces): its resident memory once it
// enforces the policies of a node full of pods.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/bench/controlplane"
	"github.com/palisade-net/palisade/test/localcluster"
)

// Prefix names the cluster's namespaces, links and pins.
const Prefix = "pbag"

// Outcome is the agent's memory at Pods pods, with Objects
// PolicyEndpoints of its node written by the controller.
type Outcome struct {
	Pods, Policies, Objects int
	RSS, PeakRSS            int64
	// Settle is how long the controller took to write every object after
	// the last pod appeared.
	Settle time.Duration
}

// Measure builds the binaries into workDir, starts a one-node cluster,
// adds pods pods and policies policies of the synthetic cluster shape,
// waits until the controller's output is stable and the agent has had
// time to program it, and reads the agent process's memory.
func Measure(ctx context.Context, workDir string, pods, policies int) (out Outcome, err error) {
	binDir := filepath.Join(workDir, "bin")
	if err := localcluster.Build(ctx, binDir); err != nil {
		return out, err
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		Prefix:    Prefix,
		IPv4Range: netip.MustParsePrefix("10.215.0.0/16"),
		BinDir:    binDir,
		WorkDir:   filepath.Join(workDir, "cluster"),
	})
	if err != nil {
		return out, fmt.Errorf("nodeagent: start the local cluster: %w", err)
	}
	defer func() { err = errors.Join(err, cluster.Close()) }()

	objs := controlplane.Cluster(pods, policies)
	for _, ns := range objs.Namespaces {
		if err := cluster.CreateNamespace(ctx, ns.Name, ns.Labels); err != nil {
			return out, err
		}
	}
	for i, pod := range objs.Pods {
		_, err := cluster.AddPod(ctx, localcluster.PodSpec{
			Namespace: pod.Namespace, Name: pod.Name, Labels: pod.Labels,
			IPv4:  netip.AddrFrom4([4]byte{10, 215, byte((i + 1) >> 8), byte(i + 1)}),
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
		})
		if err != nil {
			return out, fmt.Errorf("nodeagent: pod %d: %w", i, err)
		}
	}
	for i := range objs.NetworkPolicies {
		if err := cluster.Client.Create(ctx, &objs.NetworkPolicies[i]); err != nil {
			return out, fmt.Errorf("nodeagent: policy %d: %w", i, err)
		}
	}
	start := time.Now()
	objects, err := waitStable(ctx, cluster, 3*time.Second, 2*time.Minute)
	if err != nil {
		return out, err
	}
	out = Outcome{Pods: pods, Policies: policies, Objects: objects, Settle: time.Since(start)}
	// The agent programs within a resync of the last change; give it a few.
	time.Sleep(5 * time.Second)
	pid, err := agentPID("palisade-" + Prefix + "-" + localcluster.FirstNode)
	if err != nil {
		return out, err
	}
	out.RSS, out.PeakRSS, err = memoryOf(pid)
	return out, err
}

// waitStable waits until the number of PolicyEndpoints stays the same,
// and non-zero, for quiet.
func waitStable(ctx context.Context, cluster *localcluster.Cluster, quiet, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	last, since := -1, time.Now()
	for {
		var list v1alpha1.PolicyEndpointList
		if err := cluster.Client.List(ctx, &list); err != nil {
			return 0, fmt.Errorf("nodeagent: list PolicyEndpoints: %w", err)
		}
		if n := len(list.Items); n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) >= quiet {
			return n, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("nodeagent: PolicyEndpoints not stable after %v (%d now)", timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// agentPID finds the agent process whose command line names pinDir
// (unique to this cluster's node).
func agentPID(pinDir string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "agent" && strings.Contains(string(cmdline), pinDir) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("nodeagent: no agent process with %s on its command line", pinDir)
}

// memoryOf reads VmRSS and VmHWM of a process.
func memoryOf(pid int) (rss, peak int64, err error) {
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, err
	}
	return controlplane.ParseMemory(string(status))
}

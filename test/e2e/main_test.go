// Package e2e runs the upstream NetworkPolicy scenarios (test/netpolcases)
// against a real local cluster (test/localcluster): kube-apiserver and
// etcd, the controller and an agent as processes, pods as network
// namespaces on two simulated nodes (the host namespace and a network
// namespace, each with its agent), dual-stack, real TCP and UDP
// connections over IPv4 and IPv6. It needs root, the testenv
// binaries (`make testenv`) and builds cmd/controller and cmd/agent itself.
package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/test/localcluster"
	"github.com/palisade-net/palisade/test/netpolcases"
)

var cluster *localcluster.Cluster

// setupError, when set, fails every test with the reason the cluster could
// not start.
var setupError error

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped: needs root (network namespaces, BPF)")
		return 0
	}
	workDir, err := os.MkdirTemp("", "palisade-e2e-")
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	keep := false
	defer func() {
		if keep {
			fmt.Printf("e2e: logs kept in %s\n", workDir)
		} else {
			os.RemoveAll(workDir)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	binDir := filepath.Join(workDir, "bin")
	start := time.Now()
	if setupError = localcluster.Build(ctx, binDir); setupError == nil {
		fmt.Printf("e2e: built controller and agent in %v\n", time.Since(start).Round(time.Millisecond))
		cluster, setupError = localcluster.Start(ctx, localcluster.Options{
			Prefix:              "pe2e",
			IPv4Range:           netip.MustParsePrefix("10.244.128.0/20"),
			SecondNodeRange:     netip.MustParsePrefix("10.244.144.0/20"),
			IPv6Range:           netip.MustParsePrefix("fd00:10:244:1::/64"),
			SecondNodeIPv6Range: netip.MustParsePrefix("fd00:10:244:2::/64"),
			BinDir:              binDir,
			WorkDir:             workDir,
		})
	}
	if setupError == nil {
		setupError = populate(ctx)
	}
	if setupError != nil {
		keep = true
	} else {
		fmt.Printf("e2e: cluster with %d pods up in %v\n", len(cluster.PodNames()), time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	if code != 0 && cluster != nil {
		fmt.Print(cluster.Logs(60))
		keep = true
	}
	if cluster != nil {
		if err := cluster.Close(); err != nil {
			fmt.Println("e2e: cleanup:", err)
			code = 1
		}
	}
	return code
}

// placement puts the pods named b on the second node, so that every case
// has pairs within a node and pairs across nodes. Pod j of namespace i is
// 10.244.(128+i).(10+j) and fd00:10:244:1::(i+1):(10+j) on the first node,
// 10.244.(144+i).(10+j) and fd00:10:244:2::(i+1):(10+j) on the second.
func placement(namespaceIndex, podIndex int) (node string, ipv4, ipv6 netip.Addr) {
	node, third, nodeNumber := localcluster.FirstNode, byte(128+namespaceIndex), byte(1)
	if netpolcases.PodNames[podIndex] == "b" {
		node, third, nodeNumber = localcluster.SecondNode, byte(144+namespaceIndex), 2
	}
	ipv4 = netip.AddrFrom4([4]byte{10, 244, third, byte(10 + podIndex)})
	ipv6 = netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x02, 0x44, 0, nodeNumber, 12: 0, 13: byte(namespaceIndex + 1), 14: 0, 15: byte(10 + podIndex)})
	return node, ipv4, ipv6
}

// populate creates namespaces x, y, z and pods a, b, c in each, serving
// ports 80 and 81 on TCP and UDP (and declaring SCTP, like upstream).
func populate(ctx context.Context) error {
	var ports []corev1.ContainerPort
	for _, protocol := range netpolcases.Protocols {
		for _, port := range netpolcases.Ports {
			ports = append(ports, corev1.ContainerPort{Name: netpolcases.ContainerPortName(port, protocol), ContainerPort: port, Protocol: protocol})
		}
	}
	for i, ns := range netpolcases.Namespaces {
		if err := cluster.CreateNamespace(ctx, ns, netpolcases.NamespaceLabels(ns)); err != nil {
			return err
		}
		for j, name := range netpolcases.PodNames {
			node, ipv4, ipv6 := placement(i, j)
			_, err := cluster.AddPod(ctx, localcluster.PodSpec{
				Namespace: ns, Name: name,
				Labels: netpolcases.PodLabels(ns + "/" + name),
				IPv4:   ipv4,
				IPv6:   ipv6,
				Ports:  ports,
				Node:   node,
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

package agent_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/agent"
)

// staysClosed polls for a while and fails if reach ever does.
func staysClosed(t *testing.T, reach func() bool, what string) {
	t.Helper()
	open := false
	_ = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 2*time.Second, true, func(context.Context) (bool, error) {
		open = reach()
		return open, nil
	})
	if open {
		t.Fatalf("%s: reachable", what)
	}
}

// TestRestartKeepsUnplacedInterfacesHeld: an interface the earlier agent
// held closed because its pod had no IP yet stays closed across a restart
// (strict: denied; standard: isolated because a NetworkPolicy selects the
// pending pod).
func TestRestartKeepsUnplacedInterfacesHeld(t *testing.T) {
	for _, mode := range []agent.Mode{agent.Strict, agent.Standard} {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t)
			client := f.addPodNet("client")
			f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
			f.createPolicy("db", map[string]string{"tier": "db"})
			first := f.startAgent(mode)
			f.createPod("db", map[string]string{"tier": "db"}, netip.Addr{}) // no IP reported yet
			time.Sleep(200 * time.Millisecond)
			db := f.addPodNet("db", 5432)
			f.expectReach(client, db, 5432, false)
			first.stop(t)
			f.startAgent(mode)
			staysClosed(t, func() bool { return reaches(client, db, 5432) }, "after the restart")
			f.setPodIP("db", db.IPv4)
			staysClosed(t, func() bool { return reaches(client, db, 5432) }, "once the pod is placed")
		})
	}
}

// TestForceDeletedPodStaysEnforced: a pod deleted with no grace period
// keeps running until its sandbox goes; its interface keeps its policy
// (strict: is denied) while it exists.
func TestForceDeletedPodStaysEnforced(t *testing.T) {
	for _, mode := range []agent.Mode{agent.Strict, agent.Standard} {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t)
			client, server := f.addPodNet("client"), f.addPodNet("server", 8080)
			f.createPod("client", map[string]string{"app": "client"}, client.IPv4)
			f.createPod("server", map[string]string{"app": "server"}, server.IPv4)
			f.createPE("server-x", "server", map[string]string{"app": "server"}, map[string]netip.Addr{"server": server.IPv4}, nil)
			f.startAgent(mode)
			f.expectReach(client, server, 8080, false)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "server"}}
			if err := f.env.Client.Delete(context.Background(), pod, crclient.GracePeriodSeconds(0)); err != nil {
				t.Fatal(err)
			}
			staysClosed(t, func() bool { return reaches(client, server, 8080) }, "after the force delete")
		})
	}
}

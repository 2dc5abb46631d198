package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendRaw writes frames on the pod's eth0 with a packet socket.
func sendRaw(t *testing.T, p testPod, frames ...[]byte) {
	t.Helper()
	inNetns(t, p.ns, func() {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		must(t, err)
		defer unix.Close(fd)
		eth, err := net.InterfaceByName("eth0")
		must(t, err)
		for _, f := range frames {
			must(t, unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: eth.Index, Protocol: htons(unix.ETH_P_ALL)}))
		}
	})
}

// TestTruncatedHeadersDrop sends frames too short for their IP header
// through a real veth (BPF_PROG_TEST_RUN refuses them): an isolated
// direction drops them, whatever its rules.
func TestTruncatedHeadersDrop(t *testing.T) {
	d := newDataplane(t, Config{})
	pn := newPodNetwork(t, 2)
	pod := pn.pods[0]
	inNetns(t, pn.host, func() {
		must(t, d.Attach(pod.hostIfindex))
		_, err := d.SetPolicy(pod.hostIfindex, &policy.Endpoint{Egress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 1, CIDR: netip.MustParsePrefix("0.0.0.0/0")}, {ID: 2, CIDR: netip.MustParsePrefix("::/0")}}}})
		must(t, err)
	})
	good := packet.Build(packet.Spec{Src: pod.ip, Dst: pn.pods[1].ip, Protocol: policy.UDP, SrcPort: 1, DstPort: 9})
	shortV4 := good[:14+12]
	shortV6 := make([]byte, 14+30)
	binary.BigEndian.PutUint16(shortV6[12:], 0x86dd)
	shortV6[14] = 0x60
	before, err := d.Counters(pod.hostIfindex)
	must(t, err)
	sendRaw(t, pod, shortV4, shortV6, good)
	var after Counters
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		after, err = d.Counters(pod.hostIfindex)
		must(t, err)
		if after.Egress.DenyPackets-before.Egress.DenyPackets >= 2 && after.Egress.AllowPackets > before.Egress.AllowPackets {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := after.Egress.DenyPackets - before.Egress.DenyPackets; got != 2 {
		t.Errorf("dropped %d truncated frames, want 2", got)
	}
	if after.Egress.AllowPackets == before.Egress.AllowPackets {
		t.Error("the well-formed frame was not allowed")
	}
}

// TestLegacyAttachEnforcesAndDetaches uses clsact + cls_bpf, the fallback
// for kernels without TCX.
func TestLegacyAttachEnforcesAndDetaches(t *testing.T) {
	d := newDataplane(t, Config{ForceTCLegacy: true})
	pn := newPodNetwork(t, 2)
	client, server := pn.pods[0], pn.pods[1]
	inNetns(t, pn.host, func() {
		must(t, d.Attach(server.hostIfindex))
		must(t, d.Attach(server.hostIfindex))
		_, err := d.SetPolicy(server.hostIfindex, &policy.Endpoint{Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{
			{ID: 1, CIDR: hostPrefix(client.ip), Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 8080}}}}}})
		must(t, err)
	})
	var listeners []net.Listener
	inNetns(t, server.ns, func() {
		for _, port := range []string{"8080", "8081"} {
			l, err := net.Listen("tcp4", server.ip.String()+":"+port)
			must(t, err)
			listeners = append(listeners, l)
			go echoTCP(l)
		}
	})
	t.Cleanup(func() {
		for _, l := range listeners {
			l.Close()
		}
	})
	dial := func(port string) error {
		var err error
		inNetns(t, client.ns, func() {
			var c net.Conn
			c, err = net.DialTimeout("tcp4", server.ip.String()+":"+port, time.Second)
			if err == nil {
				err = roundTrip(c, []byte("x"))
				c.Close()
			}
		})
		return err
	}
	if err := dial("8080"); err != nil {
		t.Fatalf("allowed port: %v", err)
	}
	if dial("8081") == nil {
		t.Fatal("port the policy does not allow reachable through the legacy attachment")
	}
	states, err := d.Endpoints()
	must(t, err)
	if len(states) != 1 || !states[0].Attached {
		t.Errorf("endpoints: %+v, want one attached", states)
	}
	inNetns(t, pn.host, func() { must(t, d.Detach(server.hostIfindex)) })
	if err := dial("8081"); err != nil {
		t.Errorf("after Detach: %v", err)
	}
}

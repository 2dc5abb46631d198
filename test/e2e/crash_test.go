package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/test/localcluster"
	"github.com/palisade-net/palisade/test/netpolcases"
	"github.com/palisade-net/palisade/test/podnet"
	"github.com/palisade-net/palisade/test/reachability"
)

// echoPort is where the crash test's echo server listens in the server pod.
const echoPort = 7000

// Crash test pods: the server and the denied client share the first node,
// whose agent is killed; the allowed client is on the second node.
const (
	crashServer  = "x/a"
	crashAllowed = "x/b"
	crashDenied  = "x/c"
)

// Killing the agent with SIGKILL under traffic must leave the pinned
// dataplane enforcing: an established allowed connection keeps working, a
// denied pod never gets through, and the restarted agent adopts the state
// (no duplicate attachments) and applies later policy changes.
func TestAgentKilledUnderTrafficKeepsEnforcing(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	server, allowed, denied := crashPod(t, crashServer), crashPod(t, crashAllowed), crashPod(t, crashDenied)
	pods := []string{crashServer, crashAllowed, crashDenied}
	t.Cleanup(func() {
		if err := cluster.DeleteAllPolicies(ctx, netpolcases.Namespaces); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		if wait, err := cluster.WaitFor(ctx, reachability.New(pods, true), localcluster.IPv4, 80, corev1.ProtocolTCP, time.Now(), convergenceDeadline, nil); err != nil {
			t.Errorf("cleanup: traffic not restored after deleting the policy: %v\n%s", err, reachability.Compare("cleanup", reachability.New(pods, true), wait.Observed))
		}
	})
	serveEcho(t, server, echoPort)
	serveUDPEcho(t, server, echoPort)

	// 1. Isolate the server's ingress, allowing only the allowed client.
	isolation := crashPolicy(crashAllowed)
	if err := cluster.Client.Create(ctx, isolation); err != nil {
		t.Fatal(err)
	}
	onlyAllowed := reachability.New(pods, true)
	onlyAllowed.Set(crashDenied, crashServer, false)
	waitMatrix(t, onlyAllowed, localcluster.IPv4, 80, time.Now())
	checkEchoPort(t, allowed, denied, server, false)
	attachedBefore := tcxPrograms(t, server.HostVeth)

	// 2. A long-lived allowed connection exchanging messages, and a denied
	// pod probing, all through the crash.
	conversation := startConversation(t, allowed, netip.AddrPortFrom(server.IPv4, echoPort), server.Name)
	datagrams := startUDPConversation(t, allowed, netip.AddrPortFrom(server.IPv6, echoPort))
	prober := startDeniedProbes(denied, []netip.AddrPort{
		netip.AddrPortFrom(server.IPv4, 80),
		netip.AddrPortFrom(server.IPv6, 80),
		netip.AddrPortFrom(server.IPv4, echoPort),
	}, []netip.AddrPort{
		netip.AddrPortFrom(server.IPv4, echoPort),
		netip.AddrPortFrom(server.IPv6, echoPort),
	})
	time.Sleep(time.Second)

	// 3. SIGKILL the agent, leave the node without one for a moment, start
	// it again on the same pins.
	agent, err := cluster.AgentProcess(localcluster.FirstNode)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL agent (pid %d): %v", agent.Pid, err)
	}
	messagesAtKill, datagramsAtKill, probesAtKill := conversation.exchanged.Load(), datagrams.exchanged.Load(), prober.probes.Load()
	time.Sleep(2 * time.Second)
	messagesWithoutAgent, probesWithoutAgent := conversation.exchanged.Load()-messagesAtKill, prober.probes.Load()-probesAtKill
	datagramsWithoutAgent := datagrams.exchanged.Load() - datagramsAtKill
	restarted := time.Now()
	if err := cluster.RestartAgent(ctx, localcluster.FirstNode, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	time.Sleep(2 * time.Second)
	conversation.stop()
	datagrams.stop()
	prober.stop()

	// 4. Nothing broke, nothing leaked.
	t.Logf("agent pid %d killed; new agent ready %v after its start (%v after the kill); %d messages exchanged on one connection (%d while no agent ran), %d UDP datagrams echoed on one flow (%d while no agent ran), %d denied probes (%d while no agent ran)",
		agent.Pid, ready.Sub(restarted).Round(time.Millisecond), ready.Sub(killed).Round(time.Millisecond),
		conversation.exchanged.Load(), messagesWithoutAgent, datagrams.exchanged.Load(), datagramsWithoutAgent,
		prober.probes.Load(), probesWithoutAgent)
	if err := conversation.err; err != nil {
		t.Errorf("the established connection broke after %d messages: %v", conversation.exchanged.Load(), err)
	}
	if messagesWithoutAgent == 0 {
		t.Errorf("no message exchanged while the agent was down: the conversation stalled")
	}
	if err := datagrams.err; err != nil {
		t.Errorf("the UDP flow broke after %d datagrams: %v", datagrams.exchanged.Load(), err)
	}
	if datagramsWithoutAgent == 0 {
		t.Errorf("no UDP datagram echoed while the agent was down: the flow stalled")
	}
	if probesWithoutAgent == 0 {
		t.Errorf("no denied probe ran while the agent was down")
	}
	for _, breach := range prober.breaches {
		t.Errorf("denied pod %s got through: %s", crashDenied, breach)
	}
	waitMatrix(t, onlyAllowed, localcluster.IPv4, 80, time.Now())
	waitMatrix(t, onlyAllowed, localcluster.IPv6, 80, time.Now())
	checkEchoPort(t, allowed, denied, server, true)
	if attachedAfter := tcxPrograms(t, server.HostVeth); attachedAfter != attachedBefore {
		t.Errorf("TCX programs on %s: %s before the crash, %s after the restart", server.HostVeth, attachedBefore, attachedAfter)
	}

	// The restarted agent drives the state: allowing the denied pod works.
	current := &networkingv1.NetworkPolicy{}
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(isolation), current); err != nil {
		t.Fatal(err)
	}
	current.Spec = crashPolicy(crashAllowed, crashDenied).Spec
	changed := time.Now()
	if err := cluster.Client.Update(ctx, current); err != nil {
		t.Fatal(err)
	}
	took := waitMatrix(t, reachability.New(pods, true), localcluster.IPv4, 80, changed)
	t.Logf("policy change after the restart took effect in %v", took.Round(time.Millisecond))
}

func crashPod(t *testing.T, key string) *podnet.Pod {
	t.Helper()
	pod, ok := cluster.Pod(key)
	if !ok {
		t.Fatalf("no pod %s in the cluster", key)
	}
	return pod
}

// crashPolicy selects the server and admits the clients on port 80 and the
// echo port (TCP and UDP).
func crashPolicy(clients ...string) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	var peers []networkingv1.NetworkPolicyPeer
	for _, c := range clients {
		peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: netpolcases.PodLabels(c)}})
	}
	udp := corev1.ProtocolUDP
	port := func(n int, protocol *corev1.Protocol) networkingv1.NetworkPolicyPort {
		p := intstr.FromInt32(int32(n))
		return networkingv1.NetworkPolicyPort{Protocol: protocol, Port: &p}
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: reachability.Namespace(crashServer), Name: "crash-test"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: netpolcases.PodLabels(crashServer)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: []networkingv1.NetworkPolicyPort{port(80, &tcp), port(echoPort, &tcp), port(echoPort, &udp)}}},
		},
	}
}

func waitMatrix(t *testing.T, expected *reachability.Matrix, family localcluster.Family, port int32, since time.Time) time.Duration {
	t.Helper()
	wait, err := cluster.WaitFor(context.Background(), expected, family, port, corev1.ProtocolTCP, since, convergenceDeadline, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, reachability.Compare(fmt.Sprintf("%d/TCP %s", port, family), expected, wait.Observed))
	}
	return wait.Took
}

// checkEchoPort asserts that allowed opens new connections to the server's
// echo port and denied cannot, over both families.
func checkEchoPort(t *testing.T, allowed, denied, server *podnet.Pod, ipv6 bool) {
	t.Helper()
	target := netip.AddrPortFrom(server.IPv4, echoPort)
	if ipv6 {
		target = netip.AddrPortFrom(server.IPv6, echoPort)
	}
	if answer, err := allowed.Probe(policy.TCP, target, localcluster.ConfirmTimeout); err != nil || answer != server.Name {
		t.Errorf("%s -> %v: answer %q, %v; want %q", allowed.Name, target, answer, err, server.Name)
	}
	if answer, err := denied.Probe(policy.TCP, target, localcluster.ConfirmTimeout); err == nil {
		t.Errorf("%s -> %v: got through (answer %q)", denied.Name, target, answer)
	}
}

// serveEcho listens on port inside pod: each connection first gets the
// pod's name (so podnet probes work on it), then every line back.
func serveEcho(t *testing.T, pod *podnet.Pod, port int) {
	t.Helper()
	var listener net.Listener
	err := pod.InNetNS(func() (err error) {
		listener, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("echo server in %s: %v", pod.Name, err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		listener.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			go func() {
				defer conn.Close()
				if _, err := conn.Write([]byte(pod.Name + "\n")); err != nil {
					return
				}
				lines := bufio.NewScanner(conn)
				for lines.Scan() {
					if _, err := conn.Write(append(lines.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// conversation exchanges numbered lines with an echo server on one TCP
// connection until stopped or until an exchange fails.
type conversation struct {
	exchanged atomic.Int64
	err       error
	done      chan struct{}
	finished  chan struct{}
}

// exchangeTimeout bounds one message's round trip: any loss stalls it.
const exchangeTimeout = 2 * time.Second

func startConversation(t *testing.T, from *podnet.Pod, to netip.AddrPort, serverName string) *conversation {
	t.Helper()
	var conn net.Conn
	err := from.InNetNS(func() (err error) {
		conn, err = net.DialTimeout("tcp", to.String(), time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("%s cannot connect to %v: %v", from.Name, to, err)
	}
	t.Cleanup(func() { conn.Close() })
	reader := bufio.NewReader(conn)
	conn.SetDeadline(time.Now().Add(exchangeTimeout))
	greeting, err := reader.ReadString('\n')
	if err != nil || greeting != serverName+"\n" {
		t.Fatalf("%s -> %v: greeting %q, %v", from.Name, to, greeting, err)
	}
	c := &conversation{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(c.finished)
		for n := 0; ; n++ {
			select {
			case <-c.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			message := fmt.Sprintf("message %d from %s\n", n, from.Name)
			conn.SetDeadline(time.Now().Add(exchangeTimeout))
			if _, err := conn.Write([]byte(message)); err != nil {
				c.err = fmt.Errorf("writing message %d: %w", n, err)
				return
			}
			answer, err := reader.ReadString('\n')
			if err != nil {
				c.err = fmt.Errorf("reading the echo of message %d: %w", n, err)
				return
			}
			if answer != message {
				c.err = fmt.Errorf("message %d: sent %q, got back %q", n, message, answer)
				return
			}
			c.exchanged.Add(1)
		}
	}()
	return c
}

func (c *conversation) stop() {
	close(c.done)
	<-c.finished
}

// serveUDPEcho sends every datagram to port inside pod back to its sender.
func serveUDPEcho(t *testing.T, pod *podnet.Pod, port int) {
	t.Helper()
	var conn net.PacketConn
	err := pod.InNetNS(func() (err error) {
		conn, err = net.ListenPacket("udp", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("UDP echo server in %s: %v", pod.Name, err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			conn.WriteTo(buf[:n], from)
		}
	}()
}

// startUDPConversation sends numbered datagrams from one socket to a UDP
// echo server until stopped, each waiting for its echo: a datagram lost
// (on veths that do not drop) or not echoed within exchangeTimeout ends it.
func startUDPConversation(t *testing.T, from *podnet.Pod, to netip.AddrPort) *conversation {
	t.Helper()
	var conn net.Conn
	err := from.InNetNS(func() (err error) {
		conn, err = net.Dial("udp", to.String())
		return err
	})
	if err != nil {
		t.Fatalf("%s: UDP socket to %v: %v", from.Name, to, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &conversation{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(c.finished)
		buf := make([]byte, 2048)
		for n := 0; ; n++ {
			select {
			case <-c.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			message := fmt.Sprintf("datagram %d from %s", n, from.Name)
			conn.SetDeadline(time.Now().Add(exchangeTimeout))
			if _, err := conn.Write([]byte(message)); err != nil {
				c.err = fmt.Errorf("sending datagram %d: %w", n, err)
				return
			}
			got, err := conn.Read(buf)
			if err != nil {
				c.err = fmt.Errorf("reading the echo of datagram %d: %w", n, err)
				return
			}
			if string(buf[:got]) != message {
				c.err = fmt.Errorf("datagram %d: sent %q, got back %q", n, message, buf[:got])
				return
			}
			c.exchanged.Add(1)
		}
	}()
	return c
}

// deniedProbes connects from a pod, over and over, to TCP targets it must
// not reach and sends datagrams to UDP ones, and records every connection
// that was established and every answer.
type deniedProbes struct {
	probes   atomic.Int64
	breaches []string
	done     chan struct{}
	finished chan struct{}
}

func startDeniedProbes(from *podnet.Pod, targets, udpTargets []netip.AddrPort) *deniedProbes {
	d := &deniedProbes{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(d.finished)
		for {
			for _, target := range udpTargets {
				select {
				case <-d.done:
					return
				default:
				}
				// Any answer from a UDP echo server is a breach.
				if answer, err := from.Probe(policy.UDP, target, 200*time.Millisecond); err == nil {
					d.breaches = append(d.breaches, fmt.Sprintf("%s -> %v/UDP answered %q at %s", from.Name, target, answer, time.Now().Format("15:04:05.000")))
				}
				d.probes.Add(1)
			}
			for _, target := range targets {
				select {
				case <-d.done:
					return
				default:
				}
				// A completed handshake is a breach, whatever the answer.
				var conn net.Conn
				err := from.InNetNS(func() (err error) {
					conn, err = net.DialTimeout("tcp", target.String(), 200*time.Millisecond)
					return err
				})
				if err == nil {
					conn.Close()
					d.breaches = append(d.breaches, fmt.Sprintf("%s -> %v connected at %s", from.Name, target, time.Now().Format("15:04:05.000")))
				}
				d.probes.Add(1)
			}
		}
	}()
	return d
}

func (d *deniedProbes) stop() {
	close(d.done)
	<-d.finished
}

// tcxPrograms describes the TCX programs attached to a host interface of
// the first node, e.g. "ingress 1, egress 1".
func tcxPrograms(t *testing.T, ifname string) string {
	t.Helper()
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		t.Fatalf("find %s: %v", ifname, err)
	}
	var counts []int
	for _, attach := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		result, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: attach})
		if err != nil {
			t.Fatalf("query TCX programs on %s: %v", ifname, err)
		}
		counts = append(counts, len(result.Programs))
	}
	if counts[0] != 1 || counts[1] != 1 {
		t.Errorf("%s: want one TCX program each way, have %d ingress, %d egress", ifname, counts[0], counts[1])
	}
	return fmt.Sprintf("ingress %d, egress %d", counts[0], counts[1])
}

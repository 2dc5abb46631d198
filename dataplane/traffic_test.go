package dataplane

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/palisade-net/palisade/policy"
)

// inNetns runs fn on a thread switched to ns. Sockets fn creates stay in ns.
func inNetns(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatalf("enter netns: %v", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("cannot return to the original network namespace: " + err.Error())
		}
	}()
	fn()
}

// newNetns creates an unnamed network namespace, released when the test ends.
func newNetns(t testing.TB) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		panic(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

type testPod struct {
	ns          netns.NsHandle
	ip          netip.Addr
	hostIfindex int // in the host namespace
}

// podNetwork is a host namespace with a bridge and pods on veths, all in
// namespaces of their own: no traffic touches the test's namespace.
type podNetwork struct {
	host netns.NsHandle
	pods []testPod
}

func newPodNetwork(t *testing.T, n int) *podNetwork {
	t.Helper()
	pn := &podNetwork{host: newNetns(t)}
	for i := range n {
		pn.pods = append(pn.pods, testPod{ns: newNetns(t), ip: netip.AddrFrom4([4]byte{10, 213, 0, byte(i + 1)})})
	}
	inNetns(t, pn.host, func() {
		h, err := netlink.NewHandle()
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		must(t, h.LinkAdd(br))
		must(t, h.LinkSetUp(br))
		lo, _ := h.LinkByName("lo")
		must(t, h.LinkSetUp(lo))
		for i := range pn.pods {
			p := &pn.pods[i]
			name := "veth" + strconv.Itoa(i)
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Index}, PeerName: "eth0",
				PeerNamespace: netlink.NsFd(int(p.ns))}
			must(t, h.LinkAdd(veth))
			l, err := h.LinkByName(name)
			must(t, err)
			must(t, h.LinkSetUp(l))
			p.hostIfindex = l.Attrs().Index
		}
	})
	for i := range pn.pods {
		p := &pn.pods[i]
		inNetns(t, p.ns, func() {
			h, err := netlink.NewHandle()
			must(t, err)
			defer h.Close()
			eth, err := h.LinkByName("eth0")
			must(t, err)
			must(t, h.AddrAdd(eth, &netlink.Addr{IPNet: netlink.NewIPNet(p.ip.AsSlice())}))
			must(t, h.LinkSetUp(eth))
			lo, _ := h.LinkByName("lo")
			must(t, h.LinkSetUp(lo))
			_, subnet, _ := net.ParseCIDR("10.213.0.0/24")
			must(t, h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: subnet, Scope: netlink.SCOPE_LINK}))
		})
	}
	return pn
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// TestRealTraffic attaches the programs to pods' veths and checks real TCP
// and UDP traffic: allowed connections and their replies, refused ones,
// and an established connection cut when the policy revokes it.
func TestRealTraffic(t *testing.T) {
	d := newDataplane(t, Config{})
	pn := newPodNetwork(t, 3)
	client, server, stranger := pn.pods[0], pn.pods[1], pn.pods[2]
	serverPolicy := func(tcpPort uint16) *policy.Endpoint {
		return &policy.Endpoint{
			Ingress: policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 1, CIDR: hostPrefix(client.ip),
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: tcpPort}, {Protocol: policy.UDP, Port: 9090}}}}},
			Egress: policy.Direction{Isolated: true}, // replies only
		}
	}
	clientPolicy := &policy.Endpoint{
		Ingress: policy.Direction{Isolated: true},
		Egress:  policy.Direction{Isolated: true, Rules: []policy.Rule{{ID: 2, CIDR: netip.MustParsePrefix("10.213.0.0/24")}}},
	}
	inNetns(t, pn.host, func() {
		for _, p := range pn.pods {
			must(t, d.Attach(p.hostIfindex))
			must(t, d.Attach(p.hostIfindex)) // idempotent
		}
		_, err := d.SetPolicy(server.hostIfindex, serverPolicy(8080))
		must(t, err)
		_, err = d.SetPolicy(client.hostIfindex, clientPolicy)
		must(t, err)
		_, err = d.SetPolicy(stranger.hostIfindex, clientPolicy)
		must(t, err)
	})

	var listeners []net.Listener
	var udpConn net.PacketConn
	inNetns(t, server.ns, func() {
		for _, port := range []string{"8080", "8081"} {
			l, err := net.Listen("tcp4", server.ip.String()+":"+port)
			must(t, err)
			listeners = append(listeners, l)
			go echoTCP(l)
		}
		var err error
		udpConn, err = net.ListenPacket("udp4", server.ip.String()+":9090")
		must(t, err)
		go echoUDP(udpConn)
	})
	t.Cleanup(func() {
		for _, l := range listeners {
			l.Close()
		}
		udpConn.Close()
	})

	dial := func(from testPod, port string) (net.Conn, error) {
		var c net.Conn
		var err error
		inNetns(t, from.ns, func() {
			c, err = net.DialTimeout("tcp4", server.ip.String()+":"+port, time.Second)
		})
		return c, err
	}

	conn, err := dial(client, "8080")
	if err != nil {
		t.Fatalf("allowed connection failed: %v", err)
	}
	defer conn.Close()
	if err := roundTrip(conn, []byte("hello")); err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	if c, err := dial(client, "8081"); err == nil {
		c.Close()
		t.Error("connection to a port the server's policy does not allow succeeded")
	}
	if c, err := dial(stranger, "8080"); err == nil {
		c.Close()
		t.Error("connection from a peer the server's policy does not allow succeeded")
	}
	udpRoundTrip := func(port string) error {
		var c net.Conn
		var err error
		inNetns(t, client.ns, func() { c, err = net.Dial("udp4", server.ip.String()+":"+port) })
		if err != nil {
			return err
		}
		defer c.Close()
		return roundTrip(c, []byte("ping"))
	}
	if err := udpRoundTrip("9090"); err != nil {
		t.Errorf("allowed UDP exchange: %v", err)
	}
	if err := udpRoundTrip("9091"); err == nil {
		t.Error("UDP to a port the policy does not allow got an answer")
	}

	c, err := d.Counters(server.hostIfindex)
	must(t, err)
	if c.Ingress.AllowPackets == 0 || c.Ingress.DenyPackets == 0 || c.Egress.AllowPackets == 0 {
		t.Errorf("server counters %+v: want allowed and denied ingress and allowed replies", c)
	}

	// Revoke: port 8080 is no longer allowed; the established connection
	// is cut on its next packet.
	inNetns(t, pn.host, func() {
		_, err := d.SetPolicy(server.hostIfindex, serverPolicy(8443))
		must(t, err)
	})
	if err := roundTrip(conn, []byte("again")); err == nil {
		t.Error("connection revoked by the new policy still works")
	}
	if err := udpRoundTrip("9090"); err != nil {
		t.Errorf("UDP still allowed after the change: %v", err)
	}
}

func roundTrip(c net.Conn, msg []byte) error {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func echoTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

func echoUDP(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		c.WriteTo(buf[:n], from)
	}
}

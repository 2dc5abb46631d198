package localcluster

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/palisade-net/palisade/test/podnet"
)

func newTestNode(t *testing.T) *podnet.Node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	node, err := podnet.NewNode("plcn", "node-t", []netip.Prefix{netip.MustParsePrefix("10.244.171.0/24")}, []netip.Prefix{netip.MustParsePrefix("10.244.170.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := node.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	return node
}

// An agent inside a node reaches the apiserver's loopback address through
// the forwarder.
func TestForwarderRelaysLoopbackIntoANode(t *testing.T) {
	node := newTestNode(t)
	server, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go func() {
		for {
			conn, err := server.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				line, _ := bufio.NewReader(conn).ReadString('\n')
				conn.Write([]byte("host got " + line))
			}()
		}
	}()

	var direct error
	node.InNetNS(func() error {
		c, err := net.DialTimeout("tcp", server.Addr().String(), 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		direct = err
		return nil
	})
	if direct == nil {
		t.Fatal("the node reached the host's loopback without a forwarder: not isolated")
	}

	forward, err := forwardIntoNode(node, server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer forward.Close()
	var conn net.Conn
	if err := node.InNetNS(func() (err error) {
		conn, err = net.DialTimeout("tcp", server.Addr().String(), time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	conn.Write([]byte("hello\n"))
	answer, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || answer != "host got hello\n" {
		t.Fatalf("answer %q, %v", answer, err)
	}
}

// A process started for a node runs in the node's network namespace.
func TestProcessStartsInsideTheNode(t *testing.T) {
	node := newTestNode(t)
	p, err := startProcess("sleeper", filepath.Join(t.TempDir(), "log"), node, "/bin/sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(5 * time.Second)
	inside, err := os.Readlink("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var want string
	node.InNetNS(func() (err error) {
		want, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	})
	self, _ := os.Readlink("/proc/thread-self/ns/net")
	if inside != want || inside == self {
		t.Fatalf("process netns %s, node netns %s, ours %s", inside, want, self)
	}
	if err := p.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// Two clusters with one prefix would sweep each other's pods.
func TestOnePrefixOneCluster(t *testing.T) {
	first, err := lockPrefix("plct")
	if err != nil {
		t.Fatal(err)
	}
	if second, err := lockPrefix("plct"); err == nil {
		second.Close()
		t.Fatal("a second cluster could take the same prefix")
	}
	first.Close()
	again, err := lockPrefix("plct")
	if err != nil {
		t.Fatalf("prefix not released: %v", err)
	}
	again.Close()
}

package podnet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/palisade-net/palisade/policy"
)

// Probe asks, from inside the pod, the server at to for its name over
// proto (TCP or UDP) and returns the answer. An error means no answer
// within timeout (dropped, refused, unreachable).
func (p *Pod) Probe(proto policy.Protocol, to netip.AddrPort, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	switch proto {
	case policy.TCP:
		// The connect blocks the thread inside the namespace until it
		// completes or times out; only the socket needs the namespace, the
		// read below runs anywhere.
		err := p.InNetNS(func() (err error) {
			conn, err = net.DialTimeout("tcp", to.String(), timeout)
			return err
		})
		if err != nil {
			return "", err
		}
	case policy.UDP:
		err := p.InNetNS(func() (err error) {
			conn, err = net.Dial("udp", to.String())
			return err
		})
		if err != nil {
			return "", err
		}
		if _, err := conn.Write([]byte("probe\n")); err != nil {
			conn.Close()
			return "", err
		}
	default:
		return "", fmt.Errorf("protocol %s cannot be probed (TCP and UDP only)", ProtocolName(proto))
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// Connection is one probe: From asks To's address of the given family on
// Port/Protocol.
type Connection struct {
	From, To *Pod
	Port     uint16
	Protocol policy.Protocol
	IPv6     bool
}

func (c Connection) String() string {
	return fmt.Sprintf("%s -> %s %d/%s", c.From.Name, c.To.Name, c.Port, ProtocolName(c.Protocol))
}

// Target is the address the connection probes.
func (c Connection) Target() netip.AddrPort {
	if c.IPv6 {
		return netip.AddrPortFrom(c.To.IPv6, c.Port)
	}
	return netip.AddrPortFrom(c.To.IPv4, c.Port)
}

// ProbeAll probes every connection, at most concurrency at a time, and
// returns for each whether the expected server answered with its own name.
func ProbeAll(ctx context.Context, connections []Connection, timeout time.Duration, concurrency int) []bool {
	if concurrency < 1 {
		concurrency = 1
	}
	connected := make([]bool, len(connections))
	slots := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i, c := range connections {
		if ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			answer, err := c.From.Probe(c.Protocol, c.Target(), timeout)
			connected[i] = err == nil && answer == c.To.Name
		}()
	}
	wg.Wait()
	return connected
}

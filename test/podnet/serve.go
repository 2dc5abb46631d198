package podnet

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/palisade-net/palisade/policy"
)

// Serve listens inside the pod on each port for each protocol (TCP or
// UDP), on every address of the pod. A TCP server writes the pod name and
// closes; a UDP server answers every datagram with the pod name. Servers
// stop when the network is closed.
func (p *Pod) Serve(ports []uint16, protocols []policy.Protocol) error {
	for _, proto := range protocols {
		for _, port := range ports {
			if err := p.serve(port, proto); err != nil {
				return fmt.Errorf("podnet: pod %s: serve %d/%s: %w", p.Name, port, ProtocolName(proto), err)
			}
		}
	}
	return nil
}

func (p *Pod) serve(port uint16, proto policy.Protocol) error {
	address := net.JoinHostPort("", strconv.Itoa(int(port)))
	switch proto {
	case policy.TCP:
		var listener net.Listener
		err := p.InNetNS(func() (err error) {
			listener, err = net.Listen("tcp", address)
			return err
		})
		if err != nil {
			return err
		}
		p.track(listener)
		go p.acceptTCP(listener)
	case policy.UDP:
		var conn net.PacketConn
		err := p.InNetNS(func() (err error) {
			conn, err = net.ListenPacket("udp", address)
			return err
		})
		if err != nil {
			return err
		}
		p.track(conn)
		go p.echoUDP(conn)
	default:
		return fmt.Errorf("protocol %d cannot be served (TCP and UDP only)", proto)
	}
	return nil
}

func (p *Pod) track(c interface{ Close() error }) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closers = append(p.closers, c)
}

func (p *Pod) acceptTCP(listener net.Listener) {
	answer := []byte(p.Name + "\n")
	for {
		conn, err := listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer conn.Close()
			conn.Write(answer)
		}()
	}
}

func (p *Pod) echoUDP(conn net.PacketConn) {
	answer := []byte(p.Name + "\n")
	buf := make([]byte, 512)
	for {
		_, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		conn.WriteTo(answer, from)
	}
}

// ProtocolName is "TCP", "UDP", "SCTP" or the protocol number.
func ProtocolName(proto policy.Protocol) string {
	switch proto {
	case policy.TCP:
		return "TCP"
	case policy.UDP:
		return "UDP"
	case policy.SCTP:
		return "SCTP"
	}
	return strconv.Itoa(int(proto))
}

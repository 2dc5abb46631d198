package localcluster

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/palisade-net/palisade/test/podnet"
)

// forwarder accepts TCP connections on an address inside a node's
// namespace and relays each to the same address in this namespace.
type forwarder struct {
	listener net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func forwardIntoNode(machine *podnet.Node, address string) (io.Closer, error) {
	f := &forwarder{conns: map[net.Conn]struct{}{}}
	err := machine.InNetNS(func() (err error) {
		f.listener, err = net.Listen("tcp", address)
		return err
	})
	if err != nil {
		return nil, err
	}
	go f.serve(address)
	return f, nil
}

func (f *forwarder) serve(address string) {
	for {
		inside, err := f.listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		} else if err != nil {
			continue
		}
		outside, err := net.Dial("tcp", address)
		if err != nil {
			inside.Close()
			continue
		}
		if !f.track(inside, outside) {
			return
		}
		go f.relay(inside, outside)
		go f.relay(outside, inside)
	}
}

func (f *forwarder) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *forwarder) relay(to, from net.Conn) {
	io.Copy(to, from)
	to.Close()
	from.Close()
}

// Close stops accepting and closes every relayed connection.
func (f *forwarder) Close() error {
	err := f.listener.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
	}
	f.conns = nil
	return err
}

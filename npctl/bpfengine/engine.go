// Package bpfengine judges simulated packets with the real eBPF programs:
// a private Dataplane (its own pin directory) holds each pod's policy, and
// every frame runs through the pod's program with BPF_PROG_TEST_RUN. It
// needs root (CAP_BPF, CAP_NET_ADMIN) and a mounted bpffs.
//
// The kernel resolves the ifindex a test run claims in the caller's network
// namespace, so the engine gives each pod a veth in a network
// namespace of its own and runs the programs from a thread inside it.
package bpfengine

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/policy"
)

// PinParent is the bpffs directory the engine makes its private pin
// directory in.
var PinParent = "/sys/fs/bpf"

// Verdicts the TC programs return.
const (
	returnPass = -1 // TCX_NEXT
	returnShot = 2  // TC_ACT_SHOT
)

// Engine is a simulate.Engine backed by the eBPF programs.
type Engine struct {
	dp      *dataplane.Dataplane
	pinPath string
	ns      netns.NsHandle
	links   *netlink.Handle
	ifindex map[probe.Pod]int
	// programmed is the policy last given to each pod's endpoint.
	programmed map[probe.Pod]*policy.Endpoint
	// work runs on the thread inside ns.
	work chan func()
	done chan struct{}
}

// Open loads the programs into a private pin directory and creates the
// network namespace the test runs happen in.
func Open() (*Engine, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("not root: loading eBPF programs needs CAP_BPF and CAP_NET_ADMIN")
	}
	var fs [8]byte
	if _, err := rand.Read(fs[:]); err != nil {
		return nil, err
	}
	pinPath := filepath.Join(PinParent, "npctl-simulate-"+hex.EncodeToString(fs[:]))
	if _, err := os.Stat(PinParent); err != nil {
		return nil, fmt.Errorf("bpffs: %w", err)
	}
	dp, err := dataplane.Open(dataplane.Config{
		PinPath:          pinPath,
		ConntrackSize:    1 << 14,
		RuleCapacity:     1 << 16,
		PortRuleCapacity: 1 << 14,
		MaxEndpoints:     1 << 12,
		FragmentSize:     1 << 10,
		EventRingBytes:   1 << 16,
	})
	if err != nil {
		os.RemoveAll(pinPath)
		return nil, fmt.Errorf("load the dataplane: %w", err)
	}
	e := &Engine{dp: dp, pinPath: pinPath, ifindex: map[probe.Pod]int{}, programmed: map[probe.Pod]*policy.Endpoint{}, work: make(chan func()), done: make(chan struct{})}
	ready := make(chan error)
	go e.serve(ready)
	if err := <-ready; err != nil {
		dp.Purge()
		os.RemoveAll(pinPath)
		return nil, err
	}
	return e, nil
}

// serve moves its thread into a new network namespace and runs work there
// until Close. The thread is never unlocked: it dies with the goroutine
// rather than return to the scheduler in the wrong namespace.
func (e *Engine) serve(ready chan<- error) {
	runtime.LockOSThread()
	defer close(e.done)
	ns, err := netns.New()
	if err != nil {
		ready <- fmt.Errorf("create a network namespace: %w", err)
		return
	}
	links, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		ready <- fmt.Errorf("netlink in the simulation namespace: %w", err)
		return
	}
	e.ns, e.links = ns, links
	ready <- nil
	for fn := range e.work {
		fn()
	}
}

func (e *Engine) do(fn func() error) error {
	errc := make(chan error, 1)
	e.work <- func() { errc <- fn() }
	return <-errc
}

// Name says what judges.
func (e *Engine) Name() string {
	return "eBPF programs (BPF_PROG_TEST_RUN)"
}

// endpoint returns the ifindex of the pod's veth, created on first use,
// with ep programmed.
func (e *Engine) endpoint(pod probe.Pod, ep *policy.Endpoint) (int, error) {
	ifindex, ok := e.ifindex[pod]
	if !ok {
		name := fmt.Sprintf("sim%d", len(e.ifindex))
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
		if err := e.links.LinkAdd(veth); err != nil {
			return 0, fmt.Errorf("add link %s for pod %s: %w", name, pod, err)
		}
		link, err := e.links.LinkByName(name)
		if err != nil {
			return 0, fmt.Errorf("find link %s: %w", name, err)
		}
		ifindex = link.Attrs().Index
		e.ifindex[pod] = ifindex
	}
	if e.programmed[pod] != ep {
		if _, err := e.dp.SetPolicy(ifindex, ep); err != nil {
			return 0, fmt.Errorf("program pod %s: %w", pod, err)
		}
		e.programmed[pod] = ep
	}
	return ifindex, nil
}

// Judge runs frame through the program of dir for pod, whose policy is ep.
// The eBPF programs do not report which rule allowed a packet: the verdict
// carries Allowed only.
func (e *Engine) Judge(pod probe.Pod, ep *policy.Endpoint, dir policy.Dir, frame []byte) (policy.Verdict, error) {
	ifindex, err := e.endpoint(pod, ep)
	if err != nil {
		return policy.Verdict{}, err
	}
	ingress, egress := e.dp.Programs()
	prog := ingress
	if dir == policy.Egress {
		prog = egress
	}
	var ret uint32
	err = e.do(func() error {
		var runErr error
		ret, runErr = prog.Run(&ebpf.RunOptions{Data: frame, Context: skbContext(ifindex)})
		return runErr
	})
	if err != nil {
		return policy.Verdict{}, fmt.Errorf("BPF_PROG_TEST_RUN: %w", err)
	}
	switch int32(ret) {
	case returnPass:
		return policy.Verdict{Allowed: true}, nil
	case returnShot:
		return policy.Verdict{Allowed: false}, nil
	}
	return policy.Verdict{}, fmt.Errorf("program returned %d, neither pass nor drop", int32(ret))
}

// skbContext is struct __sk_buff up to and including ifindex (the 11th
// 32-bit field), the only field set.
func skbContext(ifindex int) []uint32 {
	ctx := make([]uint32, 11)
	ctx[10] = uint32(ifindex)
	return ctx
}

// Close removes the namespace (and its links) and every pinned object.
func (e *Engine) Close() error {
	close(e.work)
	<-e.done
	e.links.Close()
	e.ns.Close()
	err := e.dp.Purge()
	if _, statErr := os.Stat(e.pinPath); !errors.Is(statErr, os.ErrNotExist) {
		err = errors.Join(err, os.RemoveAll(e.pinPath))
	}
	return err
}

// PinPath is the engine's private pin directory, for tools that read the
// pinned state.
func (e *Engine) PinPath() string { return e.pinPath }

// Dataplane is the engine's dataplane.
func (e *Engine) Dataplane() *dataplane.Dataplane { return e.dp }

// Ifindex returns the ifindex of a pod's veth, false if the pod was never judged.
func (e *Engine) Ifindex(pod probe.Pod) (int, bool) {
	ifindex, ok := e.ifindex[pod]
	return ifindex, ok
}

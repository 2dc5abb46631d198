package localcluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/test/podnet"
	"github.com/palisade-net/palisade/test/reachability"
)

// Probe timeouts. Pods share one host, so an answer takes microseconds;
// PollTimeout only bounds how long a dropped probe waits. A matrix that
// matches with PollTimeout is confirmed with ConfirmTimeout before it is
// believed, so a probe slowed by a loaded machine cannot pass for a
// policy's drop.
const (
	PollTimeout    = 100 * time.Millisecond
	ConfirmTimeout = time.Second
	probeParallel  = 32
)

func protocolOf(p corev1.Protocol) (policy.Protocol, error) {
	switch p {
	case corev1.ProtocolTCP:
		return policy.TCP, nil
	case corev1.ProtocolUDP:
		return policy.UDP, nil
	}
	return 0, fmt.Errorf("cannot probe protocol %s", p)
}

// Family is the address family probes use.
type Family int

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Observe probes every ordered pair of pods (loopback included) on
// port/protocol over family and returns who reached whom.
func (c *Cluster) Observe(ctx context.Context, pods []string, family Family, port int32, protocol corev1.Protocol, timeout time.Duration) (*reachability.Matrix, error) {
	var pairs []reachability.Pair
	for _, from := range pods {
		for _, to := range pods {
			pairs = append(pairs, reachability.Pair{From: from, To: to})
		}
	}
	connected, err := c.probePairs(ctx, pairs, family, port, protocol, timeout)
	if err != nil {
		return nil, err
	}
	m := reachability.New(pods, false)
	for i, pair := range pairs {
		m.Set(pair.From, pair.To, connected[i])
	}
	return m, ctx.Err()
}

func (c *Cluster) probePairs(ctx context.Context, pairs []reachability.Pair, family Family, port int32, protocol corev1.Protocol, timeout time.Duration) ([]bool, error) {
	proto, err := protocolOf(protocol)
	if err != nil {
		return nil, err
	}
	connections := make([]podnet.Connection, 0, len(pairs))
	for _, pair := range pairs {
		source, ok1 := c.Pod(pair.From)
		destination, ok2 := c.Pod(pair.To)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("no pod %s or %s in the cluster", pair.From, pair.To)
		}
		if family == IPv6 && !destination.IPv6.IsValid() {
			return nil, fmt.Errorf("pod %s has no IPv6 address", pair.To)
		}
		connections = append(connections, podnet.Connection{From: source, To: destination, Port: uint16(port), Protocol: proto, IPv6: family == IPv6})
	}
	return podnet.ProbeAll(ctx, connections, timeout, probeParallel), nil
}

// Wait is the outcome of WaitFor.
type Wait struct {
	// Took runs from the change to the start of the probe round that
	// observed the expected matrix (then confirmed).
	Took time.Duration
	// Observed is the last matrix observed.
	Observed *reachability.Matrix
	// Interrupted counts the watched pairs seen blocked in some round and
	// still blocked when probed again at once with ConfirmTimeout.
	Interrupted int
}

// WaitFor probes until the observed matrix equals expected (loopback
// ignored) or the deadline passes. A round that matches is confirmed by
// probing again, with ConfirmTimeout, the pairs expected blocked; pairs
// that answered need no confirmation. watch lists pairs that should stay
// connected all along (connected before the change and after it); the
// ones seen blocked on the way, and again when probed at once with
// ConfirmTimeout (a probe of PollTimeout can miss on a busy machine), are
// counted in Wait.Interrupted.
func (c *Cluster) WaitFor(ctx context.Context, expected *reachability.Matrix, family Family, port int32, protocol corev1.Protocol, since time.Time, deadline time.Duration, watch []reachability.Pair) (Wait, error) {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var result Wait
	interrupted := map[reachability.Pair]bool{}
	noteInterruptions := func(m *reachability.Matrix) error {
		var suspects []reachability.Pair
		for _, pair := range watch {
			if !m.Get(pair.From, pair.To) && !interrupted[pair] {
				suspects = append(suspects, pair)
			}
		}
		if len(suspects) == 0 {
			return nil
		}
		connected, err := c.probePairs(ctx, suspects, family, port, protocol, ConfirmTimeout)
		if err != nil {
			return err
		}
		for i, pair := range suspects {
			if !connected[i] {
				interrupted[pair] = true
			}
		}
		result.Interrupted = len(interrupted)
		return nil
	}
	for {
		roundStart := time.Now()
		m, err := c.Observe(ctx, expected.Pods(), family, port, protocol, PollTimeout)
		if err != nil {
			if result.Observed == nil {
				result.Observed = m
			}
			return result, fmt.Errorf("%d/%s %s: no match within %v: %w", port, protocol, family, deadline, err)
		}
		result.Observed = m
		if err := noteInterruptions(m); err != nil {
			return result, fmt.Errorf("%d/%s %s: confirming interruptions: %w", port, protocol, family, err)
		}
		if diffs, err := expected.Differences(m); err != nil {
			return result, err
		} else if len(diffs) > 0 {
			continue
		}
		var blocked []reachability.Pair
		for _, from := range expected.Pods() {
			for _, to := range expected.Pods() {
				if from != to && !expected.Get(from, to) {
					blocked = append(blocked, reachability.Pair{From: from, To: to})
				}
			}
		}
		connected, err := c.probePairs(ctx, blocked, family, port, protocol, ConfirmTimeout)
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return result, fmt.Errorf("%d/%s %s: confirming: %w", port, protocol, family, err)
		}
		confirmed := true
		for i, pair := range blocked {
			if connected[i] {
				result.Observed.Set(pair.From, pair.To, true)
				confirmed = false
			}
		}
		if confirmed {
			result.Took = roundStart.Sub(since)
			return result, nil
		}
	}
}

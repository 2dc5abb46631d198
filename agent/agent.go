// Package agent is the node agent: it watches its node's pods, the
// NetworkPolicies and the PolicyEndpoints concerning its node, finds each
// pod's host-side interface, programs the dataplane and reports back
// through PolicyEndpoint status. See README.md.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/palisade-net/palisade/agent/flowlog"
	"github.com/palisade-net/palisade/agent/podlink"
	"github.com/palisade-net/palisade/agent/policyset"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/dataplane"
	"github.com/palisade-net/palisade/policy"
)

// Config configures an Agent.
type Config struct {
	NodeName string
	Mode     Mode // default Standard
	// UnknownLinkGrace is how long a new interface no pod is placed on is
	// treated as a possible pod's (default 2m).
	UnknownLinkGrace time.Duration
	// ResyncPeriod re-checks everything even without events (default 1m).
	ResyncPeriod time.Duration
	// GCPeriod is how often expired connection-tracking entries are
	// collected (default 10s).
	GCPeriod time.Duration
	// InterfacePrefix, when set, limits the interfaces the agent considers
	// to those whose name starts with it (several agents sharing one host,
	// as in tests and the demo). Empty: every veth, eni* and vlan*.
	InterfacePrefix string
	// FlowLog, when set, receives one record per dataplane event.
	FlowLog *flowlog.Writer
	Log     logr.Logger
}

// CacheOptions restricts the manager's cache to what concerns node: its
// pods (field selector spec.nodeName) and its PolicyEndpoints (label
// palisade.io/node). NetworkPolicies are cached whole: they are small and
// the agent needs every selector.
func CacheOptions(node string) cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:              {Field: fields.OneTermEqualSelector("spec.nodeName", node)},
			&v1alpha1.PolicyEndpoint{}: {Label: labels.SelectorFromSet(labels.Set{v1alpha1.NodeLabel: v1alpha1.LabelValue(node)})},
		},
	}
}

// Agent programs one node's dataplane.
type Agent struct {
	cfg      Config
	log      logr.Logger
	cache    cache.Cache
	client   client.Client
	recorder recorder.EventRecorder
	dp       *dataplane.Dataplane
	metrics  *metrics

	trigger chan struct{}
	ready   atomic.Bool

	linksMu sync.Mutex
	links   map[int]linkInfo
	// routesChanged is set by interface and route events; it invalidates
	// routeCache, the pod interface found per pod IP (0: none).
	routesChanged atomic.Bool
	routeCache    map[netip.Addr]int
	started       time.Time

	view atomic.Pointer[nodeView] // for metrics and flow logs

	// Owned by the sync loop.
	synced     bool
	sets       map[policyset.SetKey]policyset.Set
	programmed map[int]*policy.Endpoint // what SetPolicy last succeeded with
	attached   map[int]bool             // attached by this process
	pinned     map[int]bool             // endpoints and attachments found pinned at start
	// heldAtStart: interfaces an earlier agent enforced; placed: interfaces
	// a pod was placed on. Both last as long as the interface.
	heldAtStart map[int]bool
	placed      map[int]bool
	measured    map[int]bool // interfaces whose readiness latency was recorded
	enforced    map[int]bool // interfaces whose first enforcement was recorded
	conditions  map[string]condition
}

// nodeView is a snapshot of which pod each interface holds and where rule
// IDs come from.
type nodeView struct {
	pods   map[int]policyset.PodKey
	ips    map[int][]netip.Addr
	result *policyset.Result
}

// New creates an agent on mgr (whose cache must use CacheOptions) driving
// dp, registers its runnable, health checks and metrics.
func New(mgr manager.Manager, dp *dataplane.Dataplane, cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("agent: node name is required")
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = Standard
	case Standard, Strict:
	default:
		return nil, fmt.Errorf("agent: unknown mode %q (want %q or %q)", cfg.Mode, Standard, Strict)
	}
	if cfg.UnknownLinkGrace == 0 {
		cfg.UnknownLinkGrace = 2 * time.Minute
	}
	if cfg.ResyncPeriod == 0 {
		cfg.ResyncPeriod = time.Minute
	}
	if cfg.GCPeriod == 0 {
		cfg.GCPeriod = 10 * time.Second
	}
	a := &Agent{
		cfg:         cfg,
		log:         cfg.Log.WithName("agent").WithValues("node", cfg.NodeName),
		cache:       mgr.GetCache(),
		client:      mgr.GetClient(),
		recorder:    mgr.GetEventRecorder("palisade-agent"),
		dp:          dp,
		trigger:     make(chan struct{}, 1),
		links:       map[int]linkInfo{},
		sets:        map[policyset.SetKey]policyset.Set{},
		programmed:  map[int]*policy.Endpoint{},
		attached:    map[int]bool{},
		pinned:      map[int]bool{},
		heldAtStart: map[int]bool{},
		placed:      map[int]bool{},
		measured:    map[int]bool{},
		enforced:    map[int]bool{},
		conditions:  map[string]condition{},
	}
	a.view.Store(&nodeView{})
	var err error
	if a.metrics, err = newMetrics(a); err != nil {
		return nil, err
	}
	ctx := context.Background()
	for _, obj := range []client.Object{&corev1.Pod{}, &networkingv1.NetworkPolicy{}, &v1alpha1.PolicyEndpoint{}} {
		inf, err := a.cache.GetInformer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("agent: informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { a.poke() },
			UpdateFunc: func(any, any) { a.poke() },
			DeleteFunc: func(any) { a.poke() },
		}); err != nil {
			return nil, fmt.Errorf("agent: event handler for %T: %w", obj, err)
		}
	}
	if err := mgr.AddReadyzCheck("programmed", a.readyCheck); err != nil {
		return nil, err
	}
	if err := mgr.Add(a); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) poke() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

func (a *Agent) readyCheck(*http.Request) error {
	if !a.ready.Load() {
		return errors.New("initial sync and programming not complete")
	}
	return nil
}

// Ready tells whether the initial sync and programming are complete.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Start runs the agent until ctx ends (manager.Runnable).
func (a *Agent) Start(ctx context.Context) error {
	if err := a.watchLinks(ctx); err != nil {
		return err
	}
	pinned, err := a.dp.Endpoints()
	if err != nil {
		return fmt.Errorf("agent: reading pinned endpoints: %w", err)
	}
	for _, e := range pinned {
		a.pinned[e.Ifindex] = true
		a.heldAtStart[e.Ifindex] = true
	}
	// Interfaces listed so far existed before this agent: the earlier
	// agent's (pinned state) or not pods; later ones are new.
	a.started = time.Now()
	a.log.Info("starting", "mode", a.cfg.Mode, "pinnedEndpoints", len(pinned))
	cacheSynced := make(chan bool, 1)
	go func() { cacheSynced <- a.cache.WaitForCacheSync(ctx) }()
waitForCaches:
	for {
		select {
		case ok := <-cacheSynced:
			if !ok {
				return ctx.Err()
			}
			break waitForCaches
		case <-a.trigger:
			if a.cfg.Mode == Strict {
				a.syncOnce(ctx) // deny-all on new interfaces while the caches fill
			}
		}
	}
	a.synced = true
	a.syncOnce(ctx)
	if a.cfg.FlowLog != nil {
		go a.readEvents(ctx)
	}

	resync := time.NewTicker(a.cfg.ResyncPeriod)
	defer resync.Stop()
	gc := time.NewTicker(a.cfg.GCPeriod)
	defer gc.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.trigger:
			a.syncOnce(ctx)
		case <-resync.C:
			a.routesChanged.Store(true)
			a.syncOnce(ctx)
		case now := <-gc.C:
			if _, err := a.dp.GarbageCollect(now); err != nil {
				a.log.Error(err, "collecting expired connection-tracking entries")
			}
		}
	}
}

// syncOnce brings the dataplane in line with what the agent holds.
func (a *Agent) syncOnce(ctx context.Context) {
	start := time.Now()
	outcome, err := a.program(ctx)
	if err != nil {
		a.log.Error(err, "sync")
		time.AfterFunc(time.Second, a.poke)
		return
	}
	a.metrics.sync.Observe(time.Since(start).Seconds())
	if !a.synced {
		return
	}
	if err := a.reportStatus(ctx, outcome); err != nil {
		a.log.Error(err, "reporting PolicyEndpoint status")
		time.AfterFunc(time.Second, a.poke)
	}
	if !a.ready.Load() {
		a.ready.Store(true)
		a.log.Info("initial sync programmed", "duration", time.Since(a.started), "endpoints", len(a.programmed))
	}
}

// outcome is what one programming pass found.
type outcome struct {
	result    policyset.Result
	waiting   []policyset.Waiting
	podErrors map[policyset.PodKey]error
	unplaced  map[policyset.PodKey]bool // pods of the node whose interface is not found
	pes       []v1alpha1.PolicyEndpoint
}

func (a *Agent) program(ctx context.Context) (outcome, error) {
	var out outcome
	in := planInput{Mode: a.cfg.Mode, Synced: a.synced, Now: time.Now(), Started: a.started, Grace: a.cfg.UnknownLinkGrace,
		HeldAtStart: a.heldAtStart, Placed: a.placed}
	a.linksMu.Lock()
	in.Links = make(map[int]linkInfo, len(a.links))
	for i, l := range a.links {
		in.Links[i] = l
	}
	a.linksMu.Unlock()

	if a.synced {
		// The cached objects are read, never modified: no copies.
		noCopy := client.UnsafeDisableDeepCopy
		var pods corev1.PodList
		if err := a.cache.List(ctx, &pods, noCopy); err != nil {
			return out, fmt.Errorf("listing pods: %w", err)
		}
		var nps networkingv1.NetworkPolicyList
		if err := a.cache.List(ctx, &nps, noCopy); err != nil {
			return out, fmt.Errorf("listing NetworkPolicies: %w", err)
		}
		var pes v1alpha1.PolicyEndpointList
		if err := a.cache.List(ctx, &pes, noCopy); err != nil {
			return out, fmt.Errorf("listing PolicyEndpoints: %w", err)
		}
		out.pes = pes.Items
		var podsets []policyset.Pod
		for i := range pods.Items {
			p := podInfoOf(&pods.Items[i])
			in.Pods = append(in.Pods, p)
			if !p.HostNetwork && !p.Finished {
				podsets = append(podsets, policyset.Pod{Namespace: p.Key.Namespace, Name: p.Key.Name, Labels: p.Labels})
			}
		}
		a.sets, out.waiting = policyset.Assemble(pes.Items, a.sets)
		pin := policyset.Input{Sets: a.sets, Pods: podsets, Previous: a.view.Load().result}
		for i := range nps.Items {
			s, err := policyset.SelectionOf(&nps.Items[i])
			if err != nil {
				a.log.Error(err, "NetworkPolicy ignored for local selection")
				continue
			}
			pin.Selections = append(pin.Selections, s)
		}
		out.result = policyset.Compute(pin)
		in.Result = out.result
	}
	if a.routesChanged.Swap(false) || a.routeCache == nil {
		a.routeCache = map[netip.Addr]int{}
	}
	in.Mapping = mapLinks(in.Pods, in.Links, a.resolvePodLink)
	out.unplaced = map[policyset.PodKey]bool{}
	for _, p := range in.Pods {
		if !p.HostNetwork && !p.Finished {
			out.unplaced[p.Key] = true
		}
	}
	for _, pk := range in.Mapping {
		delete(out.unplaced, pk)
	}
	targets := plan(in)
	out.podErrors = a.apply(in, targets)

	view := &nodeView{pods: map[int]policyset.PodKey{}, ips: map[int][]netip.Addr{}, result: &out.result}
	podIPs := map[policyset.PodKey][]netip.Addr{}
	for _, p := range in.Pods {
		podIPs[p.Key] = p.IPs
	}
	for i, pk := range in.Mapping {
		view.pods[i] = pk
		view.ips[i] = podIPs[pk]
	}
	a.view.Store(view)
	return out, nil
}

// apply programs targets. Nothing is removed before the first sync.
func (a *Agent) apply(in planInput, targets map[int]target) map[policyset.PodKey]error {
	podErrors := map[policyset.PodKey]error{}
	for index, t := range targets {
		log := a.log.WithValues("ifindex", index, "interface", in.Links[index].Name)
		if t.Pod != nil {
			log = log.WithValues("pod", t.Pod.String())
		}
		if t.Keep || (!a.synced && a.pinned[index]) {
			continue // enforcing what it enforces now
		}
		if t.Pod != nil {
			a.placed[index] = true
		}
		// The policy goes in before the programs, so that a veth never
		// runs the programs without its policy (which would pass all).
		failed := false
		switch {
		case t.Endpoint != nil:
			if prev, ok := a.programmed[index]; ok && reflect.DeepEqual(prev, t.Endpoint) {
				break
			}
			start := time.Now()
			revision, err := a.dp.SetPolicy(index, t.Endpoint)
			a.metrics.programming.Observe(time.Since(start).Seconds())
			if err != nil {
				// The dataplane keeps the previous policy, or a closed one.
				log.Error(err, "programming policy; the pod stays closed")
				a.metrics.errors.WithLabelValues("set-policy").Inc()
				delete(a.programmed, index)
				if t.Pod != nil {
					podErrors[*t.Pod] = err
				}
				failed = true
				break
			}
			a.programmed[index] = t.Endpoint
			log.V(1).Info("programmed", "revision", revision, "ingressRules", len(t.Endpoint.Ingress.Rules), "egressRules", len(t.Endpoint.Egress.Rules))
		case a.programmed[index] != nil || a.pinned[index]:
			if err := a.dp.RemovePolicy(index); err != nil {
				log.Error(err, "removing policy")
				failed = true
				break
			}
			delete(a.programmed, index)
			delete(a.pinned, index)
			log.V(1).Info("policy removed")
		}
		if t.Attach && !a.attached[index] {
			if err := a.dp.Attach(index); err != nil {
				log.Error(err, "attaching")
				a.metrics.errors.WithLabelValues("attach").Inc()
				if t.Pod != nil {
					podErrors[*t.Pod] = fmt.Errorf("attaching to %s: %w", in.Links[index].Name, err)
				}
				continue
			}
			a.attached[index] = true
		}
		if failed {
			continue
		}
		if seen := in.Links[index].FirstSeen; !a.enforced[index] && seen.After(a.started) {
			a.enforced[index] = true
			d := time.Since(seen)
			a.metrics.enforced.Observe(d.Seconds())
			log.V(1).Info("new interface enforced", "sinceInterfaceSeen", d, "isolated", t.Endpoint != nil)
		}
		if t.Pod != nil && t.Settled && !a.measured[index] {
			a.measured[index] = true
			if seen := in.Links[index].FirstSeen; seen.After(a.started) {
				d := time.Since(seen)
				a.metrics.podReady.Observe(d.Seconds())
				log.Info("pod interface enforcing its policy", "sinceInterfaceSeen", d, "policed", t.Endpoint != nil)
			}
		}
	}
	if !a.synced {
		return podErrors
	}
	// What no target holds: interfaces gone, pods gone, interfaces no
	// longer held as unknown pods.
	stale := map[int]bool{}
	for i := range a.attached {
		stale[i] = true
	}
	for i := range a.programmed {
		stale[i] = true
	}
	for i := range a.pinned {
		stale[i] = true
	}
	for i := range stale {
		if _, ok := targets[i]; ok {
			continue
		}
		_, linkExists := in.Links[i]
		if err := a.dp.RemovePolicy(i); err != nil && linkExists {
			a.log.Error(err, "removing policy", "ifindex", i)
			continue
		}
		if err := a.dp.Detach(i); err != nil && linkExists {
			a.log.Error(err, "detaching", "ifindex", i)
			continue
		}
		delete(a.programmed, i)
		delete(a.attached, i)
		delete(a.pinned, i)
		delete(a.heldAtStart, i)
		delete(a.placed, i)
		delete(a.measured, i)
		delete(a.enforced, i)
		a.log.V(1).Info("released interface", "ifindex", i, "exists", linkExists)
	}
	return podErrors
}

// resolvePodLink returns the pod interface the route to ips leads to.
func (a *Agent) resolvePodLink(ips []netip.Addr) (int, bool) {
	for _, ip := range ips {
		if index, ok := a.routeCache[ip]; ok && index != 0 {
			return index, true
		}
	}
	for _, ip := range ips {
		if _, known := a.routeCache[ip]; known {
			continue
		}
		link, err := podlink.ForIP(ip)
		if err != nil {
			a.routeCache[ip] = 0
			continue
		}
		a.routeCache[ip] = link.Attrs().Index
		return link.Attrs().Index, true
	}
	return 0, false
}

func podInfoOf(p *corev1.Pod) podInfo {
	info := podInfo{
		Key:         policyset.PodKey{Namespace: p.Namespace, Name: p.Name},
		Labels:      p.Labels,
		HostNetwork: p.Spec.HostNetwork,
		Finished:    p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
		Terminating: p.DeletionTimestamp != nil,
		Created:     p.CreationTimestamp.Time,
	}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			info.IPs = append(info.IPs, a)
		}
	}
	if len(info.IPs) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			info.IPs = append(info.IPs, a)
		}
	}
	return info
}

// Command agent is Palisade's node agent: it enforces the NetworkPolicies
// of its node's pods with the eBPF dataplane. See agent/README.md.
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/palisade-net/palisade/agent"
	"github.com/palisade-net/palisade/agent/flowlog"
	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/dataplane"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run() error {
	// --kubeconfig is registered by controller-runtime's config package.
	nodeName := flag.String("node-name", os.Getenv("NODE_NAME"), "node whose pods this agent enforces (default $NODE_NAME)")
	pinPath := flag.String("pin-path", dataplane.DefaultPinPath, "bpffs directory for the dataplane's pinned maps and links")
	mode := flag.String("mode", string(agent.Standard), "standard: isolate pods policies select from their first packet; strict: also deny everything on pods whose policy state is unknown")
	metricsAddr := flag.String("metrics-bind-address", ":8090", "address of the Prometheus metrics endpoint (0 disables)")
	probeAddr := flag.String("health-probe-bind-address", ":8091", "address of /healthz and /readyz")
	flowLogs := flag.String("flow-logs", "", `flow log destination: empty (or "false") = off, "-" (or "true") = standard output, or a file path`)
	flowLogRate := flag.Float64("flow-log-rate", 100, "flow log records per second at most")
	flowCacheSlots := flag.Int("flow-cache-slots", 0, "per-CPU slots of the programs' verdict cache and decision cache, a power of two (0: the dataplane's default, 256)")
	densePortSets := flag.Int("dense-port-sets", 0, "large port sets that also get a dense copy looked up in constant time, 768 KiB each (0: the dataplane's default, 8; -1: none)")
	interfacePrefix := flag.String("interface-prefix", "", "only consider host interfaces whose name starts with this (several agents on one host); empty: every veth, eni* and vlan*")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()

	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(log)
	if *nodeName == "" {
		return fmt.Errorf("--node-name (or $NODE_NAME) is required")
	}
	if *mode != string(agent.Standard) && *mode != string(agent.Strict) {
		return fmt.Errorf("--mode must be %q or %q, not %q", agent.Standard, agent.Strict, *mode)
	}
	if *flowLogRate <= 0 {
		return fmt.Errorf("--flow-log-rate must be positive")
	}
	if *flowCacheSlots < 0 {
		return fmt.Errorf("--flow-cache-slots must be a power of two, or 0 for the default")
	}

	if *densePortSets < -1 {
		return fmt.Errorf("--dense-port-sets must be -1 (none), 0 (default) or a count")
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	config, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(config, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  agent.CacheOptions(*nodeName),
		Metrics:                metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress: *probeAddr,
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}

	dp, err := dataplane.Open(dataplane.Config{PinPath: *pinPath, FlowCacheSlots: *flowCacheSlots, DensePortsets: *densePortSets})
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	// Close releases this process's handles; the pinned state keeps
	// enforcing until the next agent adopts it.
	defer dp.Close()

	cfg := agent.Config{NodeName: *nodeName, Mode: agent.Mode(*mode), InterfacePrefix: *interfacePrefix, Log: log}
	switch *flowLogs {
	case "", "false":
	default:
		out, err := flowlog.Open(*flowLogs)
		if err != nil {
			return err
		}
		defer out.Close()
		cfg.FlowLog = flowlog.New(out, *flowLogRate)
	}
	if _, err := agent.New(mgr, dp, cfg); err != nil {
		return err
	}
	log.Info("node agent starting", "node", *nodeName, "mode", *mode, "pinPath", *pinPath)
	return mgr.Start(ctrl.SetupSignalHandler())
}

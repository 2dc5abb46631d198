// Command controller compiles Kubernetes NetworkPolicies into per-node
// PolicyEndpoint objects for the Palisade node agents.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/controller"
	"github.com/palisade-net/palisade/controller/compile"
)

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

// run parses args and runs the controller until ctx ends.
func run(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("controller", flag.ContinueOnError)
	var (
		kubeconfig       string
		metricsAddr      string
		probeAddr        string
		leaderElect      bool
		leaderElectionNS string
		batchDelay       time.Duration
		maxEntries       int
	)
	flags.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster configuration")
	flags.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
	flags.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	flags.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so that several replicas can run, one active")
	flags.StringVar(&leaderElectionNS, "leader-election-namespace", "", "namespace of the election Lease; empty means the pod's namespace")
	flags.DurationVar(&batchDelay, "batch-delay", controller.DefaultBatchDelay, "how long a changed policy waits for further changes before it is compiled")
	flags.IntVar(&maxEntries, "max-entries-per-object", compile.DefaultMaxEntriesPerObject, "pods plus rules in one PolicyEndpoint before it is split into chunks")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flags)
	if err := flags.Parse(args); err != nil {
		return err
	}
	if maxEntries < 1 {
		return fmt.Errorf("--max-entries-per-object must be at least 1, got %d", maxEntries)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	config, err := loadConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(config, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "palisade-controller.palisade.io",
		LeaderElectionNamespace:       leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	reconciler := &controller.Reconciler{
		Client:     mgr.GetClient(),
		Recorder:   mgr.GetEventRecorder("palisade-controller"),
		Compile:    compile.Options{MaxEntriesPerObject: maxEntries},
		BatchDelay: batchDelay,
		// Several managers run in one process only in tests.
		SkipNameValidation: true,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.Info("starting", "leaderElection", leaderElect, "metrics", metricsAddr)
	return mgr.Start(ctx)
}

// loadConfig reads the kubeconfig file, or without one follows
// controller-runtime's rules ($KUBECONFIG, in-cluster, ~/.kube/config).
func loadConfig(path string) (*rest.Config, error) {
	if path == "" {
		return ctrl.GetConfig()
	}
	return clientcmd.BuildConfigFromFlags("", path)
}

// Package testenv runs a real kube-apiserver and etcd (controller-runtime's
// envtest, with the binaries `make testenv` builds) with the PolicyEndpoint
// CRD installed, for tests, benchmarks and the demo.
//
// There is no kube-controller-manager: nothing garbage-collects, finishes
// namespace deletion, creates service account tokens or EndpointSlices.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/palisade-net/palisade/api/v1alpha1"
	"github.com/palisade-net/palisade/deploy"
)

// Options configures StartControlPlane. The zero value is ready to use.
type Options struct {
	// AssetsDir holds the kube-apiserver and etcd binaries. Default:
	// $KUBEBUILDER_ASSETS, else $HOME/.cache/palisade/assets.
	AssetsDir string
	// WorkDir receives the kubeconfig and the process logs. Default: a new
	// temporary directory that Stop removes.
	WorkDir string
	// StartTimeout bounds the start of each process. Default: 60s.
	StartTimeout time.Duration
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// Config authenticates as a member of system:masters.
	Config *rest.Config
	// Client uses Config and Scheme.
	Client client.Client
	// Scheme has the built-in Kubernetes types and api/v1alpha1.
	Scheme *runtime.Scheme
	// KubeconfigPath is a kubeconfig file equivalent to Config, for other processes.
	KubeconfigPath string
	// WorkDir holds the kubeconfig and kube-apiserver.log, etcd.log.
	WorkDir string

	env           *envtest.Environment
	etcdDataDir   string
	removeWorkDir bool
	logs          []*os.File
}

// NewScheme returns a scheme with the built-in Kubernetes types (core,
// networking/v1, discovery/v1, rbac, coordination, ...) and api/v1alpha1.
func NewScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return scheme, nil
}

// DefaultAssetsDir is where `make testenv` puts kube-apiserver and etcd.
func DefaultAssetsDir() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "palisade", "assets")
	}
	return filepath.Join(home, ".cache", "palisade", "assets")
}

// CRDs parses the embedded deploy/crd manifests.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var crds []*apiextensionsv1.CustomResourceDefinition
	err := fs.WalkDir(deploy.CRDs, ".", func(path string, entry fs.DirEntry, err error) error {
		if err != nil || entry.IsDir() {
			return err
		}
		file, err := deploy.CRDs.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		decoder := utilyaml.NewYAMLOrJSONDecoder(file, 4096)
		for {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := decoder.Decode(crd); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if crd.Kind == "" {
				continue // an empty YAML document
			}
			if crd.Kind != "CustomResourceDefinition" {
				return fmt.Errorf("%s: kind %q, want CustomResourceDefinition", path, crd.Kind)
			}
			crds = append(crds, crd)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading deploy/crd: %w", err)
	}
	if len(crds) == 0 {
		return nil, errors.New("deploy/crd holds no CustomResourceDefinition: run `make generate-api`")
	}
	return crds, nil
}

// StartControlPlane starts etcd and kube-apiserver (RBAC authorization),
// installs the CRDs and waits until they are served. A deadline on ctx
// sooner than Options.StartTimeout replaces it. Call Stop to stop.
func StartControlPlane(ctx context.Context, opts Options) (*ControlPlane, error) {
	if opts.AssetsDir == "" {
		opts.AssetsDir = DefaultAssetsDir()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < opts.StartTimeout {
		opts.StartTimeout = time.Until(deadline)
	}
	for _, binary := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(opts.AssetsDir, binary)); err != nil {
			return nil, fmt.Errorf("testenv: %s is missing from %s: run `make testenv` (hack/testenv.sh) to build it: %w",
				binary, opts.AssetsDir, err)
		}
	}
	crds, err := CRDs()
	if err != nil {
		return nil, err
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}

	cp := &ControlPlane{Scheme: scheme, WorkDir: opts.WorkDir}
	started := false
	defer func() {
		if !started {
			cp.removeWorkDir = false // keep the logs the error points to
			_ = cp.Stop()
		}
	}()
	if cp.WorkDir == "" {
		if cp.WorkDir, err = os.MkdirTemp("", "palisade-testenv-"); err != nil {
			return nil, err
		}
		cp.removeWorkDir = true
	} else if err := os.MkdirAll(cp.WorkDir, 0o755); err != nil {
		return nil, err
	}
	// etcd 3.4 has no --unsafe-no-fsync; a memory-backed data dir makes
	// its fsyncs free.
	if cp.etcdDataDir, err = os.MkdirTemp(memoryDir(), "palisade-etcd-"); err != nil {
		return nil, err
	}
	apiserverLog, err := cp.createLog("kube-apiserver.log")
	if err != nil {
		return nil, err
	}
	etcdLog, err := cp.createLog("etcd.log")
	if err != nil {
		return nil, err
	}

	cp.env = &envtest.Environment{
		BinaryAssetsDirectory:    opts.AssetsDir,
		UseExistingCluster:       new(bool),
		Scheme:                   scheme,
		CRDs:                     crds,
		ControlPlaneStartTimeout: opts.StartTimeout,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	// Explicit paths, or envtest would prefer $KUBEBUILDER_ASSETS to opts.AssetsDir.
	cp.env.ControlPlane.Etcd = &envtest.Etcd{
		Path: filepath.Join(opts.AssetsDir, "etcd"), DataDir: cp.etcdDataDir, Out: etcdLog, Err: etcdLog}
	apiserver := cp.env.ControlPlane.GetAPIServer()
	apiserver.Path = filepath.Join(opts.AssetsDir, "kube-apiserver")
	apiserver.Out, apiserver.Err = apiserverLog, apiserverLog
	apiserver.Configure().Set("authorization-mode", "RBAC")

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	config, err := cp.env.Start()
	if err != nil {
		return nil, fmt.Errorf("testenv: starting the control plane (logs in %s): %w", cp.WorkDir, err)
	}
	cp.Config = config
	if cp.Client, err = client.New(config, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	cp.KubeconfigPath = filepath.Join(cp.WorkDir, "kubeconfig")
	if err := os.WriteFile(cp.KubeconfigPath, cp.env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	started = true
	running.add(cp)
	return cp, nil
}

// Stop stops kube-apiserver and etcd and removes what StartControlPlane created.
func (cp *ControlPlane) Stop() error {
	running.remove(cp)
	var errs []error
	if cp.env != nil {
		errs = append(errs, cp.env.Stop())
		cp.env = nil
	}
	for _, file := range cp.logs {
		errs = append(errs, file.Close())
	}
	cp.logs = nil
	if cp.etcdDataDir != "" {
		errs = append(errs, os.RemoveAll(cp.etcdDataDir))
		cp.etcdDataDir = ""
	}
	if cp.removeWorkDir {
		errs = append(errs, os.RemoveAll(cp.WorkDir))
		cp.removeWorkDir = false
	}
	return errors.Join(errs...)
}

// AddUser provisions a client certificate for user in groups and returns a
// config that authenticates with it (and no other privilege: RBAC decides).
func (cp *ControlPlane) AddUser(user string, groups ...string) (*rest.Config, error) {
	authenticated, err := cp.env.AddUser(envtest.User{Name: user, Groups: groups}, rest.CopyConfig(cp.Config))
	if err != nil {
		return nil, err
	}
	return authenticated.Config(), nil
}

func (cp *ControlPlane) createLog(name string) (*os.File, error) {
	file, err := os.Create(filepath.Join(cp.WorkDir, name))
	if err != nil {
		return nil, err
	}
	cp.logs = append(cp.logs, file)
	return file, nil
}

func memoryDir() string {
	if info, err := os.Stat("/dev/shm"); err == nil && info.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// running holds the control planes started and not yet stopped.
var running runningPlanes

type runningPlanes struct {
	sync.Mutex
	planes map[*ControlPlane]bool
}

func (r *runningPlanes) add(cp *ControlPlane) {
	r.Lock()
	defer r.Unlock()
	if r.planes == nil {
		r.planes = map[*ControlPlane]bool{}
	}
	r.planes[cp] = true
}

func (r *runningPlanes) remove(cp *ControlPlane) {
	r.Lock()
	defer r.Unlock()
	delete(r.planes, cp)
}

// StopAll stops every control plane this process started and has not
// stopped. etcd and kube-apiserver run in their own process groups, so an
// interrupted process must stop them itself or leave them running.
func StopAll() {
	running.Lock()
	planes := make([]*ControlPlane, 0, len(running.planes))
	for cp := range running.planes {
		planes = append(planes, cp)
	}
	running.Unlock()
	for _, cp := range planes {
		_ = cp.Stop()
	}
}

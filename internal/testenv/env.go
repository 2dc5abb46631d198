package testenv

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Env is a control plane used by tests.
type Env struct {
	*ControlPlane
}

// Start starts a control plane for t alone and stops it when t ends.
// It fails t, telling to run `make testenv`, if the binaries are missing.
func Start(t testing.TB) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := StartControlPlane(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return &Env{ControlPlane: cp}
}

var shared struct {
	sync.Mutex
	inMain bool
	env    *Env
	err    error
}

// Main runs a package's tests and then stops the control plane that Shared
// started, if any. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// An interrupt (SIGINT, SIGTERM) stops every control plane of the process
// before exiting.
func Main(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()

	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(interrupts)
	go func() {
		interrupt := <-interrupts
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping the control planes\n", interrupt)
		StopAll()
		os.Exit(2)
	}()

	code := m.Run()

	shared.Lock()
	defer shared.Unlock()
	shared.inMain = false
	if shared.env != nil {
		if err := shared.env.Stop(); err != nil {
			fmt.Printf("testenv: stopping the shared control plane: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		shared.env = nil
	}
	return code
}

// Shared returns the control plane shared by the package's tests, starting it
// on first use; the package's TestMain must call Main, which stops it.
// Tests sharing it should work in their own namespace (Env.Namespace).
func Shared(t testing.TB) *Env {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		t.Fatal("testenv.Shared needs the package's TestMain to call testenv.Main")
	}
	if shared.env == nil && shared.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var cp *ControlPlane
		if cp, shared.err = StartControlPlane(ctx, Options{}); shared.err == nil {
			shared.env = &Env{ControlPlane: cp}
		}
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.env
}

// Namespace creates a namespace with a name derived from the test's and
// deletes it when the test ends. Without a namespace controller the deleted
// namespace stays Terminating, with its objects, until the control plane stops.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: namespacePrefix(t.Name())}}
	ctx := context.Background()
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Client.Delete(context.Background(), ns); err != nil {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// namespacePrefix turns a test name into a DNS label prefix for GenerateName.
func namespacePrefix(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
		if b.Len() >= 40 {
			break
		}
	}
	prefix := strings.Trim(b.String(), "-")
	if prefix == "" || prefix[0] < 'a' {
		prefix = "t" + prefix
	}
	return prefix + "-"
}

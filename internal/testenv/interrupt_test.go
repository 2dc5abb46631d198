package testenv

import (
	"bufio"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const interruptChildEnv = "PALISADE_TESTENV_INTERRUPT_CHILD"

// TestInterruptStopsTheControlPlanes runs this test binary as a child that
// starts a control plane and waits; interrupting the child must stop its
// kube-apiserver and etcd.
func TestInterruptStopsTheControlPlanes(t *testing.T) {
	if os.Getenv(interruptChildEnv) == "1" {
		env := Start(t)
		apiserver, err := url.Parse(env.Config.Host)
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("READY " + apiserver.Host + " " + env.etcdDataDir + "\n")
		time.Sleep(2 * time.Minute)
		t.Fatal("not interrupted")
	}

	child := exec.Command(os.Args[0], "-test.run=^TestInterruptStopsTheControlPlanes$", "-test.v")
	child.Env = append(os.Environ(), interruptChildEnv+"=1")
	output, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = child.Process.Kill()
		<-exited
	})

	ready := make(chan []string, 1)
	go func() {
		scanner := bufio.NewScanner(output)
		for scanner.Scan() {
			if fields := strings.Fields(scanner.Text()); len(fields) == 3 && fields[0] == "READY" {
				ready <- fields[1:]
			}
		}
		exited <- child.Wait()
	}()
	var apiserverAddress, etcdDataDir string
	select {
	case fields := <-ready:
		apiserverAddress, etcdDataDir = fields[0], fields[1]
	case <-time.After(2 * time.Minute):
		t.Fatal("the child did not start a control plane within 2 minutes")
	}

	if err := child.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("the interrupted child exited with %v, want exit status 2", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the interrupted child did not exit within a minute")
	}

	if conn, err := net.DialTimeout("tcp", apiserverAddress, time.Second); err == nil {
		conn.Close()
		t.Errorf("kube-apiserver still listens on %s after the interrupt", apiserverAddress)
	}
	if _, err := os.Stat(etcdDataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etcd's data directory %s remains after the interrupt (stat: %v)", etcdDataDir, err)
	}
}

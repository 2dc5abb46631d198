package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/palisade-net/palisade/test/podnet"
)

// Build compiles the controller and the agent of the module holding this
// source tree into dir.
func Build(ctx context.Context, dir string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator), "./cmd/controller", "./cmd/agent")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building cmd/controller and cmd/agent: %w\n%s", err, out)
	}
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the palisade module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// process is a controller or agent started by the cluster.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	machine *podnet.Node
	exited  chan struct{}
	err     error
}

// startProcess starts binary inside machine's namespace (nil: this one).
// The log is appended to, so a restarted process follows its predecessor.
func startProcess(name, logPath string, machine *podnet.Node, binary string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	start := cmd.Start
	if machine != nil {
		// The child inherits the namespace of the thread that forks it.
		start = func() error { return machine.InNetNS(cmd.Start) }
	}
	if err := start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, machine: machine, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls the process's readiness endpoint until it answers 200.
func (p *process) waitReady(ctx context.Context, healthAddress string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	url := "http://" + healthAddress + "/readyz"
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: p.dial}}
	for {
		select {
		case <-p.exited:
			tail := p.logTail(40)
			if strings.Contains(tail, "address already in use") {
				return fmt.Errorf("%s exited before becoming ready: %w; log:\n%s", p.name, errPortTaken, tail)
			}
			return fmt.Errorf("%s exited before becoming ready (%v); log:\n%s", p.name, p.err, tail)
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s within %v; log:\n%s", p.name, url, timeout, p.logTail(40))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dial connects from inside the process's namespace, where it listens.
func (p *process) dial(ctx context.Context, network, address string) (conn net.Conn, err error) {
	dialer := &net.Dialer{Timeout: time.Second}
	if p.machine == nil {
		return dialer.DialContext(ctx, network, address)
	}
	err = p.machine.InNetNS(func() error {
		conn, err = dialer.DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, grace)
	}
}

// logTail returns the last lines of the process's log.
func (p *process) logTail(lines int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	all := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return string(bytes.Join(all, []byte("\n")))
}

// freeLocalAddresses returns n distinct loopback addresses whose ports are
// free right now. All n listeners are held until every port is chosen, since
// the kernel may hand a just-closed port out again.
func freeLocalAddresses(n int) ([]string, error) {
	addresses := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		addresses = append(addresses, l.Addr().String())
	}
	return addresses, nil
}

// errPortTaken marks a process that exited because another process bound
// one of its ports between our choosing it and its listening.
var errPortTaken = errors.New("a chosen port was taken by another process")

// startWithFreePorts runs launch with a fresh metrics and health address
// until the process does not lose one of them to another process (tests
// run in parallel), at most three times.
func startWithFreePorts(launch func(metrics, health string) error) error {
	var err error
	for range 3 {
		var addresses []string
		if addresses, err = freeLocalAddresses(2); err != nil {
			return err
		}
		if err = launch(addresses[0], addresses[1]); !errors.Is(err, errPortTaken) {
			return err
		}
	}
	return err
}

package podnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Forwarding in the machine's own network namespace is shared by every
// Network of every process on the machine (tests run in parallel). Each
// Network registers as a user; the first saves the original values and
// enables forwarding, the last one to leave restores them. Users whose
// process died are pruned, so a crash does not pin forwarding on forever.
var forwardingState = "/run/palisade-podnet"

var forwardingSysctls = []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

// withForwardingLock runs fn holding the machine-wide lock.
func withForwardingLock(fn func() error) error {
	if err := os.MkdirAll(filepath.Join(forwardingState, "users"), 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(forwardingState, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	return fn()
}

// acquireForwarding registers user and enables forwarding (IPv4 and IPv6).
func acquireForwarding(user string) error {
	return withForwardingLock(func() error {
		if err := os.WriteFile(filepath.Join(forwardingState, "users", user), nil, 0o644); err != nil {
			return err
		}
		for i, path := range forwardingSysctls {
			saved := filepath.Join(forwardingState, "saved-"+strconv.Itoa(i))
			if _, err := os.Stat(saved); errors.Is(err, os.ErrNotExist) {
				current, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				if err := os.WriteFile(saved, current, 0o644); err != nil {
					return err
				}
			}
			if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
		}
		return nil
	})
}

// releaseForwarding unregisters user; the last live user restores the
// values saved by the first.
func releaseForwarding(user string) error {
	return withForwardingLock(func() error {
		users := filepath.Join(forwardingState, "users")
		if err := os.Remove(filepath.Join(users, user)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		entries, err := os.ReadDir(users)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if processAlive(e.Name()) {
				return nil
			}
			os.Remove(filepath.Join(users, e.Name()))
		}
		var errs []error
		for i, path := range forwardingSysctls {
			saved := filepath.Join(forwardingState, "saved-"+strconv.Itoa(i))
			value, err := os.ReadFile(saved)
			if errors.Is(err, os.ErrNotExist) {
				continue
			} else if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.WriteFile(path, value, 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", path, err))
				continue
			}
			os.Remove(saved)
		}
		return errors.Join(errs...)
	})
}

// processAlive reads the pid a user name starts with ("<pid>-...").
func processAlive(user string) bool {
	pid, err := strconv.Atoi(strings.SplitN(user, "-", 2)[0])
	if err != nil {
		return false
	}
	return unix.Kill(pid, 0) == nil
}

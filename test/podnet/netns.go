package podnet

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetNS runs fn on an OS thread switched into ns. Sockets created by fn
// stay in ns after the thread switches back. If the thread cannot be
// switched back it stays locked, so the Go runtime discards it.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	original, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer original.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	fnErr := fn()
	if err := netns.Set(original); err != nil {
		return fmt.Errorf("return to original netns: %w", err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// newNamedNetNS creates a network namespace bind-mounted under
// /var/run/netns/name (visible to `ip netns`) without moving the caller.
func newNamedNetNS(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	original, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), fmt.Errorf("get current netns: %w", err)
	}
	defer original.Close()
	created, createErr := netns.NewNamed(name)
	if err := netns.Set(original); err != nil {
		if createErr == nil {
			created.Close()
		}
		return netns.None(), fmt.Errorf("return to original netns: %w", err)
	}
	runtime.UnlockOSThread()
	if createErr != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, createErr)
	}
	return created, nil
}

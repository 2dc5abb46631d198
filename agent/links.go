package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/palisade-net/palisade/agent/podlink"
)

// watchLinks subscribes to interface and route changes, then lists the
// current interfaces. Every pod-like interface appearing triggers a sync at
// once, so that its programs are attached before its pod sends anything.
// When either subscription ends, both are replaced.
func (a *Agent) watchLinks(ctx context.Context) error {
	linkUpdates := make(chan netlink.LinkUpdate, 256)
	routeUpdates := make(chan netlink.RouteUpdate, 256)
	done := make(chan struct{})
	// Ends both subscriptions; their goroutines close the channels once
	// no send blocks them.
	unsubscribe := sync.OnceFunc(func() {
		close(done)
		go func() {
			for range linkUpdates {
			}
		}()
		go func() {
			for range routeUpdates {
			}
		}()
	})
	onError := func(err error) { a.log.Error(err, "netlink subscription") }
	if err := netlink.LinkSubscribeWithOptions(linkUpdates, done, netlink.LinkSubscribeOptions{ErrorCallback: onError}); err != nil {
		close(done)
		return fmt.Errorf("agent: subscribing to interface changes: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routeUpdates, done, netlink.RouteSubscribeOptions{ErrorCallback: onError}); err != nil {
		unsubscribe()
		return fmt.Errorf("agent: subscribing to route changes: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		unsubscribe()
		return fmt.Errorf("agent: listing interfaces: %w", err)
	}
	a.linksMu.Lock()
	current := map[int]bool{}
	for _, l := range links {
		index := l.Attrs().Index
		if !a.isPodLink(l) {
			continue
		}
		current[index] = true
		if _, known := a.links[index]; !known {
			a.links[index] = linkInfo{Index: index, Name: l.Attrs().Name, FirstSeen: time.Now()}
		}
	}
	for index := range a.links { // after a resubscription: missed deletions
		if !current[index] {
			delete(a.links, index)
		}
	}
	a.linksMu.Unlock()

	go func() {
		resubscribe := func(what string) {
			unsubscribe()
			a.log.Info(what + " subscription closed; resubscribing")
			if err := a.resubscribe(ctx); err != nil {
				a.log.Error(err, "resubscribing")
			}
		}
		for {
			select {
			case <-ctx.Done():
				unsubscribe()
				return
			case u, ok := <-linkUpdates:
				if !ok {
					resubscribe("interface")
					return
				}
				if a.updateLink(u) {
					a.routesChanged.Store(true)
					a.poke()
				}
			case _, ok := <-routeUpdates:
				if !ok {
					resubscribe("route")
					return
				}
				a.routesChanged.Store(true)
				a.poke()
			}
		}
	}()
	return nil
}

func (a *Agent) resubscribe(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := a.watchLinks(ctx); err == nil {
			a.poke()
			return nil
		}
		time.Sleep(time.Second)
	}
	return ctx.Err()
}

// updateLink records an interface change; it tells whether it matters.
func (a *Agent) updateLink(u netlink.LinkUpdate) bool {
	attrs := u.Link.Attrs()
	a.linksMu.Lock()
	defer a.linksMu.Unlock()
	prev, known := a.links[attrs.Index]
	if u.Header.Type == unix.RTM_DELLINK {
		delete(a.links, attrs.Index)
		return known
	}
	if !a.isPodLink(u.Link) {
		if known {
			delete(a.links, attrs.Index)
		}
		return known
	}
	if known && prev.Name == attrs.Name {
		return false
	}
	seen := time.Now()
	if known {
		seen = prev.FirstSeen
	}
	a.links[attrs.Index] = linkInfo{Index: attrs.Index, Name: attrs.Name, FirstSeen: seen}
	return true
}

func (a *Agent) isPodLink(l netlink.Link) bool {
	return podlink.IsPodLink(l) && strings.HasPrefix(l.Attrs().Name, a.cfg.InterfacePrefix)
}

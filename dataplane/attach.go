package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hook is one of the two attachments of a veth.
type hook struct {
	name   string // pin file suffix
	attach ebpf.AttachType
	parent uint32 // clsact parent of the legacy filter
}

// Pod ingress is the veth's egress: packets the host sends into the pod.
var hooks = []hook{
	{name: "ingress", attach: ebpf.AttachTCXEgress, parent: netlink.HANDLE_MIN_EGRESS},
	{name: "egress", attach: ebpf.AttachTCXIngress, parent: netlink.HANDLE_MIN_INGRESS},
}

const legacySuffix = "legacy"

func (d *Dataplane) programOf(h hook) *ebpf.Program {
	if h.name == "ingress" {
		return d.objs.TcPodIngress
	}
	return d.objs.TcPodEgress
}

func (d *Dataplane) linkPin(ifindex int, suffix string) string {
	return filepath.Join(d.cfg.PinPath, "links", fmt.Sprintf("%d-%s", ifindex, suffix))
}

// Attach enforces on the host-side veth ifindex: TCX links (pinned, so they
// outlive the process) or, where TCX is missing, clsact filters. Attaching
// again moves the attachments to this process's programs.
func (d *Dataplane) Attach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := netlink.LinkByIndex(ifindex); err != nil {
		return fmt.Errorf("attach to ifindex %d: %w", ifindex, err)
	}
	if !d.cfg.ForceTCLegacy {
		err := d.attachTCX(ifindex)
		if err == nil || !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
	}
	return d.attachLegacy(ifindex)
}

func (d *Dataplane) attachTCX(ifindex int) error {
	for _, h := range hooks {
		pin := d.linkPin(ifindex, h.name)
		prog := d.programOf(h)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			err = l.Update(prog)
			info, infoErr := l.Info()
			l.Close()
			if err == nil && infoErr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
				continue
			}
			// Stale: the interface behind this ifindex went away.
			os.Remove(pin)
		}
		// First in the chain: a program before it could redirect packets past it.
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: h.attach, Anchor: link.Head()})
		if err != nil {
			return fmt.Errorf("attach %s program to ifindex %d: %w", h.name, ifindex, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pin %s link of ifindex %d: %w", h.name, ifindex, err)
		}
	}
	return nil
}

func (d *Dataplane) attachLegacy(ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("add clsact to ifindex %d: %w", ifindex, err)
	}
	for _, h := range hooks {
		filter := legacyFilter(ifindex, h)
		filter.Fd = d.programOf(h).FD()
		if err := netlink.FilterReplace(filter); err != nil {
			return fmt.Errorf("add %s filter to ifindex %d: %w", h.name, ifindex, err)
		}
	}
	// bpffs holds no regular files: an empty directory marks the veth.
	if err := os.Mkdir(d.linkPin(ifindex, legacySuffix), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("record legacy attachment: %w", err)
	}
	return nil
}

func legacyFilter(ifindex int, h hook) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    h.parent,
			Handle:    netlink.MakeHandle(0, 1),
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Name:         "palisade-" + h.name,
		DirectAction: true,
	}
}

// Detach removes the programs from the veth ifindex. Its policy, if any,
// stays programmed.
func (d *Dataplane) Detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detach(ifindex)
}

func (d *Dataplane) detach(ifindex int) error {
	var errs []error
	for _, h := range hooks {
		pin := d.linkPin(ifindex, h.name)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s link of ifindex %d: %w", h.name, ifindex, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, err)
		}
		// A defunct link (interface gone) cannot be detached and need not be.
		if err := l.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("detach %s link of ifindex %d: %w", h.name, ifindex, err))
		}
		l.Close()
	}
	marker := d.linkPin(ifindex, legacySuffix)
	if _, err := os.Stat(marker); err == nil {
		for _, h := range hooks {
			err := netlink.FilterDel(legacyFilter(ifindex, h))
			if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("delete %s filter of ifindex %d: %w", h.name, ifindex, err))
			}
		}
		errs = append(errs, os.Remove(marker))
	}
	return errors.Join(errs...)
}

// pinnedLinkIfindexes lists the veths with pinned attachments.
func (d *Dataplane) pinnedLinkIfindexes() ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(d.cfg.PinPath, "links"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	var out []int
	for _, e := range entries {
		prefix, _, _ := strings.Cut(e.Name(), "-")
		if n, err := strconv.Atoi(prefix); err == nil && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// adoptLinks moves every pinned attachment to the programs just loaded.
// Each move is one atomic replacement: the veth is never unenforced.
func (d *Dataplane) adoptLinks() error {
	ifindexes, err := d.pinnedLinkIfindexes()
	if err != nil {
		return err
	}
	var errs []error
	for _, ifindex := range ifindexes {
		if _, err := os.Stat(d.linkPin(ifindex, legacySuffix)); err == nil {
			if _, lerr := netlink.LinkByIndex(ifindex); lerr != nil {
				os.Remove(d.linkPin(ifindex, legacySuffix))
				continue
			}
			errs = append(errs, d.attachLegacy(ifindex))
			continue
		}
		for _, h := range hooks {
			pin := d.linkPin(ifindex, h.name)
			l, err := link.LoadPinnedLink(pin, nil)
			if err != nil {
				continue
			}
			if err := l.Update(d.programOf(h)); err != nil {
				// The interface is gone; the link is defunct.
				os.Remove(pin)
			}
			l.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("adopt pinned attachments: %w", err)
	}
	return nil
}

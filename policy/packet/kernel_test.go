package packet_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/packet"
)

// inFreshNetns runs f on a thread of its own in a new network namespace
// whose loopback is up and routes 127/8 from the wire. The thread, and with
// it the namespace, ends with f.
func inFreshNetns(t *testing.T, f func() error) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		done <- func() error {
			if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if err := loopbackUp(); err != nil {
				return err
			}
			// Injected frames come in like any device's: 127/8 addresses are
			// martians without route_localnet, and a local source address is
			// refused without accept_local. /proc/sys/net shows the namespace
			// of the thread that opens it.
			for _, knob := range []string{"route_localnet", "accept_local"} {
				if err := os.WriteFile("/proc/sys/net/ipv4/conf/lo/"+knob, []byte("1"), 0); err != nil {
					return err
				}
			}
			return f()
		}()
	}()
	if err := <-done; err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("needs root: %v", err)
		}
		t.Fatal(err)
	}
}

func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr struct {
		name  [16]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("SIOCGIFFLAGS: %w", errno)
	}
	ifr.flags |= syscall.IFF_UP
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("SIOCSIFFLAGS: %w", errno)
	}
	return nil
}

// injectOnLoopback sends frame out of the loopback interface through a
// packet socket, addressed to loopback's MAC, so that the kernel receives
// it as if from a wire.
func injectOnLoopback(frame []byte) error {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	// Loopback's MAC address is all zeros; TCP takes only frames sent to it.
	frame = append([]byte(nil), frame...)
	clear(frame[:6])
	return syscall.Sendto(fd, frame, 0, &syscall.SockaddrLinklayer{Ifindex: lo.Index})
}

// TestKernelAcceptsUDP checks lengths and checksums against the Linux
// stack: a built UDP frame injected on loopback reaches a socket, and the
// same frame with a wrong checksum does not.
func TestKernelAcceptsUDP(t *testing.T) {
	for _, addr := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		t.Run(addr.String(), func(t *testing.T) {
			inFreshNetns(t, func() error {
				conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
				if err != nil {
					return err
				}
				defer conn.Close()
				port := netip.MustParseAddrPort(conn.LocalAddr().String()).Port()
				spec := packet.Spec{Src: addr, Dst: addr,
					Protocol: policy.UDP, SrcPort: 9, DstPort: port, Payload: []byte("palisade")}
				if addr.Is4() {
					spec.IPv4.Options = []byte{1, 1, 1, 1} // four No-Operation options: IHL 6
				}
				good := packet.Build(spec)
				bad := append([]byte(nil), good...)
				bad[len(bad)-1] ^= 0xff // payload changed, checksum kept
				if err := injectOnLoopback(bad); err != nil {
					return err
				}
				if err := injectOnLoopback(good); err != nil {
					return err
				}
				buf := make([]byte, 64)
				conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					return fmt.Errorf("built frame not received: %v", err)
				}
				if string(buf[:n]) != "palisade" {
					return fmt.Errorf("received %q: the frame with a bad checksum was accepted", buf[:n])
				}
				return nil
			})
		})
	}
}

// netCounter reads a counter such as "Tcp:OutRsts" (from snmp) or
// "Icmp6InEchos" (from snmp6) of the calling thread's network namespace.
func netCounter(name string) (int, error) {
	if group, field, ok := strings.Cut(name, ":"); ok {
		data, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return 0, err
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i+1 < len(lines); i++ {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) == 0 || names[0] != group+":" || len(values) != len(names) {
				continue
			}
			for j, n := range names {
				if n == field {
					return strconv.Atoi(values[j])
				}
			}
		}
		return 0, fmt.Errorf("no counter %s", name)
	}
	data, err := os.ReadFile("/proc/thread-self/net/snmp6")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if fields := strings.Fields(line); len(fields) == 2 && fields[0] == name {
			return strconv.Atoi(fields[1])
		}
	}
	return 0, fmt.Errorf("no counter %s", name)
}

// TestKernelAnswers injects TCP SYNs to a closed port and ICMP echo
// requests on loopback and checks, by the namespace's counters, that the
// kernel answered them (a reset, an echo reply), and that the same frames
// with their last byte changed fail the checksum instead.
func TestKernelAnswers(t *testing.T) {
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()
	cases := []struct {
		name           string
		spec           packet.Spec
		answered, csum string
	}{
		{"TCP SYN v4", packet.Spec{Src: v4, Dst: v4, Protocol: policy.TCP, SrcPort: 1000, DstPort: 1, TCPFlags: packet.SYN, Payload: []byte{1, 2, 3}}, "Tcp:OutRsts", "Tcp:InCsumErrors"},
		{"TCP SYN v6", packet.Spec{Src: v6, Dst: v6, Protocol: policy.TCP, SrcPort: 1000, DstPort: 1, TCPFlags: packet.SYN, Payload: []byte{1, 2, 3}}, "Tcp:OutRsts", "Tcp:InCsumErrors"},
		{"ICMP echo", packet.Spec{Src: v4, Dst: v4, Protocol: policy.ICMP, ICMP: packet.ICMP{Type: packet.ICMPv4EchoRequest, ID: 1, Seq: 1}, Payload: []byte("ping!")}, "Icmp:OutEchoReps", "Icmp:InCsumErrors"},
		{"ICMPv6 echo", packet.Spec{Src: v6, Dst: v6, Protocol: policy.ICMPv6, ICMP: packet.ICMP{Type: packet.ICMPv6EchoRequest, ID: 1, Seq: 1}, Payload: []byte("ping!")}, "Icmp6OutEchoReplies", "Icmp6InCsumErrors"},
	}
	inFreshNetns(t, func() error {
		for _, tc := range cases {
			good := packet.Build(tc.spec)
			bad := append([]byte(nil), good...)
			bad[len(bad)-1] ^= 0x5a
			for _, step := range []struct {
				frame   []byte
				counter string
			}{{bad, tc.csum}, {good, tc.answered}} {
				before, err := netCounter(step.counter)
				if err != nil {
					return err
				}
				if err := injectOnLoopback(step.frame); err != nil {
					return err
				}
				deadline := time.Now().Add(3 * time.Second)
				for {
					after, err := netCounter(step.counter)
					if err != nil {
						return err
					}
					if after == before+1 {
						break
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("%s: %s stayed at %d", tc.name, step.counter, after)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}
		return nil
	})
}

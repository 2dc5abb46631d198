// Package reachability holds connectivity matrices between pods ("ns/pod"):
// what a test expects, built the way the upstream NetworkPolicy e2e tests
// build it (a default, then overrides), what probes observed, and a
// cyclonus-style printout of both with the differences marked.
// Traffic from a pod to itself (loopback) is never compared: it does not
// leave the pod's namespace, so no policy can govern it.
package reachability

import (
	"fmt"
	"strings"
)

// Matrix says, for every ordered pair of pods, whether the first reaches
// the second.
type Matrix struct {
	pods    []string
	index   map[string]int
	allowed [][]bool
}

// New returns a matrix over pods with every pair set to allowed.
// It panics on duplicate pod names: cases are written by hand in tests.
func New(pods []string, allowed bool) *Matrix {
	m := &Matrix{pods: append([]string(nil), pods...), index: map[string]int{}}
	for i, pod := range pods {
		if _, dup := m.index[pod]; dup {
			panic(fmt.Sprintf("reachability: pod %q listed twice", pod))
		}
		m.index[pod] = i
		row := make([]bool, len(pods))
		for j := range row {
			row[j] = allowed
		}
		m.allowed = append(m.allowed, row)
	}
	return m
}

// Pods lists the matrix's pods in order.
func (m *Matrix) Pods() []string { return append([]string(nil), m.pods...) }

// Namespace of "ns/pod".
func Namespace(pod string) string {
	ns, _, _ := strings.Cut(pod, "/")
	return ns
}

// Name of "ns/pod".
func Name(pod string) string {
	_, name, _ := strings.Cut(pod, "/")
	return name
}

// Peer selects pods by namespace and name; an empty field matches all.
type Peer struct {
	Namespace, Pod string
}

func (p Peer) matches(pod string) bool {
	return (p.Namespace == "" || p.Namespace == Namespace(pod)) && (p.Pod == "" || p.Pod == Name(pod))
}

func (m *Matrix) mustIndex(pod string) int {
	i, ok := m.index[pod]
	if !ok {
		panic(fmt.Sprintf("reachability: pod %q is not in the matrix %v", pod, m.pods))
	}
	return i
}

// Set sets one pair.
func (m *Matrix) Set(from, to string, allowed bool) {
	m.allowed[m.mustIndex(from)][m.mustIndex(to)] = allowed
}

// Get reads one pair.
func (m *Matrix) Get(from, to string) bool {
	return m.allowed[m.mustIndex(from)][m.mustIndex(to)]
}

// SetAllIngress sets every pair whose destination is pod.
func (m *Matrix) SetAllIngress(pod string, allowed bool) {
	j := m.mustIndex(pod)
	for i := range m.pods {
		m.allowed[i][j] = allowed
	}
}

// SetAllEgress sets every pair whose source is pod.
func (m *Matrix) SetAllEgress(pod string, allowed bool) {
	i := m.mustIndex(pod)
	for j := range m.pods {
		m.allowed[i][j] = allowed
	}
}

// SetPeers sets every pair with a source matching from and a destination
// matching to.
func (m *Matrix) SetPeers(from, to Peer, allowed bool) {
	for i, source := range m.pods {
		if !from.matches(source) {
			continue
		}
		for j, destination := range m.pods {
			if to.matches(destination) {
				m.allowed[i][j] = allowed
			}
		}
	}
}

// Pair is one ordered pair of pods.
type Pair struct {
	From, To string
}

// Differences lists the pairs, loopback excluded, where m and other
// disagree. Both must have the same pods in the same order.
func (m *Matrix) Differences(other *Matrix) ([]Pair, error) {
	if strings.Join(m.pods, ",") != strings.Join(other.pods, ",") {
		return nil, fmt.Errorf("reachability: comparing matrices over %v and %v", m.pods, other.pods)
	}
	var diffs []Pair
	for i, from := range m.pods {
		for j, to := range m.pods {
			if i != j && m.allowed[i][j] != other.allowed[i][j] {
				diffs = append(diffs, Pair{From: from, To: to})
			}
		}
	}
	return diffs, nil
}

// Clone returns an independent copy.
func (m *Matrix) Clone() *Matrix {
	c := New(m.pods, false)
	for i := range m.allowed {
		copy(c.allowed[i], m.allowed[i])
	}
	return c
}

// Table prints the matrix with sources as rows and destinations as
// columns: "." reaches, "X" does not, "-" loopback (not compared).
func (m *Matrix) Table() string {
	return m.table(nil)
}

// Compare prints expected and observed side by side, cyclonus-style, each
// observed cell that differs from the expected one marked with "!".
func Compare(title string, expected, observed *Matrix) string {
	var b strings.Builder
	diffs, err := expected.Differences(observed)
	if err != nil {
		return err.Error()
	}
	fmt.Fprintf(&b, "%s: %d of %d pairs wrong\n", title, len(diffs), len(expected.pods)*(len(expected.pods)-1))
	fmt.Fprintf(&b, "expected:\n%s", expected.Table())
	fmt.Fprintf(&b, "observed (! = not as expected):\n%s", observed.table(expected))
	for _, d := range diffs {
		fmt.Fprintf(&b, "  %s -> %s: expected %s, observed %s\n", d.From, d.To,
			word(expected.Get(d.From, d.To)), word(observed.Get(d.From, d.To)))
	}
	return b.String()
}

func word(allowed bool) string {
	if allowed {
		return "connected"
	}
	return "blocked"
}

func (m *Matrix) table(expected *Matrix) string {
	width := len("from\\to") + 2
	for _, pod := range m.pods {
		width = max(width, len(pod)+2)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s", width, "from\\to")
	for _, pod := range m.pods {
		fmt.Fprintf(&b, "%-*s", width, pod)
	}
	b.WriteString("\n")
	for i, from := range m.pods {
		fmt.Fprintf(&b, "%-*s", width, from)
		for j := range m.pods {
			cell := "X"
			if i == j {
				cell = "-"
			} else if m.allowed[i][j] {
				cell = "."
			}
			if i != j && expected != nil && expected.allowed[i][j] != m.allowed[i][j] {
				cell += "!"
			}
			fmt.Fprintf(&b, "%-*s", width, cell)
		}
		b.WriteString("\n")
	}
	return b.String()
}

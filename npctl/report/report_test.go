package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/palisade-net/palisade/npctl/probe"
	"github.com/palisade-net/palisade/npctl/simulate"
)

func outcome(from, to string, proto corev1.Protocol, port uint16, allowed bool) simulate.Outcome {
	f, _ := probe.ParsePod(from)
	t, _ := probe.ParsePod(to)
	return simulate.Outcome{Probe: probe.Probe{From: f, To: t, Port: probe.Port{Protocol: proto, Port: port}}, Allowed: allowed}
}

var sample = []simulate.Outcome{
	outcome("x/a", "x/b", corev1.ProtocolUDP, 53, false),
	outcome("x/b", "x/a", corev1.ProtocolTCP, 80, true),
	outcome("x/a", "x/b", corev1.ProtocolTCP, 80, false),
}

func TestJSONIsOneObjectPerProbe(t *testing.T) {
	var b bytes.Buffer
	if err := JSON(&b, sample); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b.String())
	}
	if len(got) != 3 {
		t.Fatalf("%d objects, want 3", len(got))
	}
	want := map[string]any{"from": "x/a", "to": "x/b", "port": float64(53), "protocol": "UDP", "allowed": false}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("first object %v: %s = %v, want %v", got[0], k, got[0][k], v)
		}
	}
	if len(got[0]) != len(want) {
		t.Errorf("first object has fields %v, want exactly %v", got[0], want)
	}
	b.Reset()
	if err := JSON(&b, nil); err != nil || b.String() != "[]\n" {
		t.Errorf("no outcomes: %q, %v", b.String(), err)
	}
}

// Every table has the same rows and columns, so tables line up.
func TestMatrixTablesPerPortInProtocolOrder(t *testing.T) {
	var b bytes.Buffer
	if err := Matrix(&b, sample); err != nil {
		t.Fatal(err)
	}
	want := `TCP/80
     x/a  x/b
x/a  -    X
x/b  .    -

UDP/53
     x/a  x/b
x/a  -    X
x/b  -    -

` + Legend + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	if err := Matrix(&b, nil); err != nil || !strings.Contains(b.String(), "no probes") {
		t.Errorf("no outcomes: %q, %v", b.String(), err)
	}
}

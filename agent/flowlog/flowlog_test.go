package flowlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteJSONLinesRateLimited(t *testing.T) {
	var buf bytes.Buffer
	w := New(&buf, 5) // burst of 5, then 5/s
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	written := 0
	for i := 0; i < 50; i++ {
		ok, err := w.Write(Record{Time: at, Verdict: "deny", Direction: "ingress", Namespace: "ns", Pod: "web", Peer: "10.0.0.7", Port: 80, Protocol: "TCP", Policy: "ns/web"})
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			written++
		}
	}
	// 50 writes in far less than a second: the burst and at most a couple
	// of refills get through.
	if written < 5 || written > 7 {
		t.Fatalf("%d of 50 written at 5/s", written)
	}
	n, dropped := w.Counts()
	if int(n) != written || int(n+dropped) != 50 {
		t.Fatalf("counts %d written %d dropped", n, dropped)
	}
	sc := bufio.NewScanner(&buf)
	lines := 0
	for sc.Scan() {
		lines++
		var got map[string]any
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if got["verdict"] != "deny" || got["policy"] != "ns/web" || got["port"] != float64(80) || got["time"] != "2026-01-02T03:04:05Z" {
			t.Fatalf("line %q", sc.Text())
		}
	}
	if lines != written {
		t.Fatalf("%d lines for %d records", lines, written)
	}
}

func TestOpenFileAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.jsonl")
	for i := 0; i < 2; i++ {
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(f, 10).Write(Record{Verdict: "allow"}); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	data, _ := os.ReadFile(path)
	if bytes.Count(data, []byte("\n")) != 2 {
		t.Fatalf("file %q", data)
	}
}

package simulate

import (
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/palisade-net/palisade/npctl/manifest"
)

// Offline, a Service without EndpointSlices gets the slices the
// EndpointSlice controller would write: one per family and resolved target
// ports; a Service with slices keeps only those.
func TestEndpointSlicesAreSynthesizedForServicesWithoutThem(t *testing.T) {
	f, err := os.Open("../cli/testdata/services.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := manifest.Load("services.yaml", f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range EndpointSlices(objs) {
		for _, ep := range s.Endpoints {
			got = append(got, s.Labels["kubernetes.io/service-name"]+" "+ep.TargetRef.Name+" "+ep.Addresses[0]+" "+portsText(s.Ports))
		}
	}
	sort.Strings(got)
	want := []string{
		"db db 10.2.2.1 pg/TCP/5432",
		"web web-1 10.2.1.1 http/TCP/8080",
		"web web-2 10.2.1.2 http/TCP/8081",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("endpoints:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

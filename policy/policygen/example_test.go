package policygen_test

import (
	"fmt"

	"github.com/palisade-net/palisade/policy"
	"github.com/palisade-net/palisade/policy/policygen"
)

// A differential test loop: the same seed always yields the same endpoints
// and frames, so a disagreement is reproduced from its seed alone. (Compiled,
// not run: it has no implementation under test.)
func Example() {
	disagreements := 0
	for seed := range uint64(10) {
		r := policygen.New(seed)
		ep := policygen.Endpoint(r)
		for i := range 100 {
			dir := policy.Dir(i % 2)
			frame := policygen.Frame(r, ep, dir)
			if i%3 == 0 {
				frame = policygen.Malformed(r, ep, dir)
			}
			want := policy.Evaluate(ep, dir, frame)
			got := want.Allowed // the implementation under test decides here
			if got != want.Allowed {
				disagreements++
				fmt.Printf("seed %d frame %d: got %v, want %v\n", seed, i, got, want)
			}
		}
	}
	fmt.Println("disagreements:", disagreements)
}

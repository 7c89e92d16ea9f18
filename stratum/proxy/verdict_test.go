package proxy

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum"
)

// verdictRecorder is a verdictPath that writes down what reached it.
type verdictRecorder struct{ got []string }

func (r *verdictRecorder) judged(ps *pendingSubmit, pool string, accepted bool, perr *stratum.Error) {
	msg := ""
	if perr != nil {
		msg = fmt.Sprintf(" %d %s", perr.Code, perr.Message)
	}
	r.got = append(r.got, fmt.Sprintf("%s %s judged accepted=%v%s", ps.worker, pool, accepted, msg))
}

func (r *verdictRecorder) unjudged(ps *pendingSubmit, pool string, reason, message string) {
	r.got = append(r.got, fmt.Sprintf("%s %s unjudged %s: %s", ps.worker, pool, reason, message))
}

// TestVerdictsGoBackTheWayTheShareCame: each forwarded share's answer (the
// pool's verdict, a timeout, a lost session) reaches the reply path the
// share carries, once, and the pool's reject ratio counts what it should.
func TestVerdictsGoBackTheWayTheShareCame(t *testing.T) {
	f := newRoutingFixture(t, []int{0}, "")
	pl := f.s.pools[0]
	u := pl.sessions[0]
	a, b := &verdictRecorder{}, &verdictRecorder{}
	u.pending[1] = &pendingSubmit{reply: a, worker: "a.1", sent: f.now}
	u.pending[2] = &pendingSubmit{reply: b, worker: "b.1", sent: f.now}
	u.pending[3] = &pendingSubmit{reply: a, worker: "a.2", sent: f.now}
	u.pending[4] = &pendingSubmit{reply: b, worker: "b.2", sent: f.now, candidate: true}

	u.onVerdict(1, &stratum.Message{Kind: stratum.KindResponse, Result: []byte("true"), Error: []byte("null")})
	u.onVerdict(2, &stratum.Message{Kind: stratum.KindResponse, Result: []byte("null"), Error: []byte(`[23, "Low difficulty share", null]`)})
	u.onVerdict(2, &stratum.Message{Kind: stratum.KindResponse, Result: []byte("true")}) // no longer pending: dropped
	u.onVerdict(4, &stratum.Message{Kind: stratum.KindResponse, Result: []byte("false")})
	u.expire(f.now.Add(time.Minute), 2*time.Second)

	wantA := []string{"a.1 pool0 judged accepted=true", "a.2 pool0 unjudged timeout: the pool did not answer within 2s"}
	wantB := []string{"b.1 pool0 judged accepted=false 23 Low difficulty share", "b.2 pool0 judged accepted=false 20 rejected by pool"}
	if !slices.Equal(a.got, wantA) || !slices.Equal(b.got, wantB) {
		t.Fatalf("miner a got %q\nwant %q\nminer b got %q\nwant %q", a.got, wantA, b.got, wantB)
	}
	// The block candidate's reject does not count against the pool.
	f.s.router.drain() // the verdicts went to the router as messages
	n := f.s.router.health[pl].verdicts.n
	if n != 3 {
		t.Errorf("the pool's reject window holds %d verdicts, want 3 (accept, reject, timeout)", n)
	}
}

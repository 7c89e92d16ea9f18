package proxy

import "testing"

// A miner's jobs carry proxy-wide sequence numbers, spaced by the number of
// pool sessions; the difficulty of each of its last keepJobs jobs must be
// found, whatever that spacing.
func TestJobDifficultyRemembersEveryValidJob(t *testing.T) {
	for _, sessions := range []uint64{1, 2, 16, 32, 40, 64} {
		m := &miner{diff: 999}
		seqs := make([]uint64, 0, 3*keepJobs)
		for i := range uint64(3 * keepJobs) {
			seq := 1 + i*sessions
			m.mu.Lock()
			m.recordJobDiffLocked(seq, float64(seq)) // a new difficulty with every job
			m.mu.Unlock()
			seqs = append(seqs, seq)
		}
		recent := seqs[len(seqs)-keepJobs:]
		for _, seq := range recent {
			if got := m.jobDifficulty(seq); got != float64(seq) {
				t.Fatalf("%d sessions: job %d: difficulty %v, want %v", sessions, seq, got, float64(seq))
			}
		}
		// Older than the session keeps: the current difficulty.
		if got := m.jobDifficulty(seqs[0]); got != 999 {
			t.Fatalf("%d sessions: forgotten job: %v, want the current 999", sessions, got)
		}
		if got := m.jobDifficulty(0); got != 999 {
			t.Fatalf("%d sessions: seq 0 matched an empty slot: %v", sessions, got)
		}
	}
}

package stratum_test

import (
	"testing"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum"
)

const submitLine = `{"id":1234,"method":"mining.submit","params":["bc1qexampleaddressxyz.rig-0042","6389a1f600003c45","0a1b2c3d","679ac169","ff05fb02","0e596000"]}`

// BenchmarkDecodeSubmit is the hottest read of the proxy: one miner share,
// from the raw line to typed fields.
func BenchmarkDecodeSubmit(b *testing.B) {
	line := []byte(submitLine)
	var m stratum.Message
	var s stratum.Submit
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if err := stratum.ParseMessage(line, &m); err != nil {
			b.Fatal(err)
		}
		if m.Method != stratum.MethodSubmit {
			b.Fatal("not a submit")
		}
		if err := s.DecodeParams(m.Params); err != nil {
			b.Fatal(err)
		}
	}
}

// benchNotify is a realistic notify: block 881423's coinbase parts and a
// 12-hash merkle branch.
func benchNotify() stratum.Notify {
	n := stratum.Notify{
		JobID:     "6389a1f600003c45",
		Coinb1:    make([]byte, 52),
		Coinb2:    make([]byte, 110),
		Version:   0x20000000,
		NBits:     0x17029a8a,
		NTime:     0x679ac169,
		CleanJobs: true,
	}
	for i := range n.Coinb1 {
		n.Coinb1[i] = byte(i)
	}
	for i := range n.Coinb2 {
		n.Coinb2[i] = byte(3 * i)
	}
	n.MerkleBranch = make([]chainhash.Hash, 12)
	for i := range n.MerkleBranch {
		n.MerkleBranch[i] = chainhash.DoubleHashH([]byte{byte(i)})
	}
	n.PrevHash = chainhash.DoubleHashH([]byte("prev"))
	return n
}

// BenchmarkEncodeNotify encodes a 12-branch mining.notify line into a reused
// buffer. A job does this once; every miner then gets the same bytes
// (job.Job.NotifyLine).
func BenchmarkEncodeNotify(b *testing.B) {
	n := benchNotify()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = stratum.AppendNotification(buf[:0], &n)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkEncodeSubmitResponse is the answer to every share.
func BenchmarkEncodeSubmitResponse(b *testing.B) {
	id := stratum.NumberID(1234)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			buf = stratum.AppendBoolResult(buf[:0], id, true)
		} else {
			buf = stratum.AppendError(buf[:0], id, stratum.CodeLowDifficulty, "low difficulty share")
		}
	}
}

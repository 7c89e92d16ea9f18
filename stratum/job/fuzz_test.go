package job_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hashgate/proxyd/stratum"
	"github.com/hashgate/proxyd/stratum/job"
)

// FuzzJobShare builds a job from arbitrary notify params and validates an
// arbitrary submit against it. Seeds are the real blocks' notify and submit
// params (also checked in under testdata/fuzz/FuzzJobShare). Nothing may
// panic; an accepted share must be a duplicate the second time, and a
// real-hash verdict must agree with the header the job reports.
func FuzzJobShare(f *testing.F) {
	for _, h := range realBlocks {
		c := loadBlock(f, h)
		f.Add(c.notify.AppendParams(nil), c.extranonce1, c.submit.AppendParams(nil), c.mask, 65536.0)
	}
	f.Add([]byte(`["x","`+string(bytes.Repeat([]byte("0"), 64))+`","","",[],"20000000","207fffff","00000000",true]`),
		[]byte{}, []byte(`["w","x","","00000000","00000000"]`), uint32(0), 1e-9)
	f.Fuzz(func(t *testing.T, notify, extranonce1, submit []byte, mask uint32, difficulty float64) {
		var n stratum.Notify
		if err := n.DecodeParams(notify); err != nil {
			if !errors.Is(err, stratum.ErrMalformed) {
				t.Fatalf("notify error %v does not wrap ErrMalformed", err)
			}
			return
		}
		j, err := job.New(&n, job.Config{})
		if err != nil {
			return
		}
		var sub stratum.Submit
		if err := sub.DecodeParams(submit); err != nil {
			return
		}
		s := job.Share{Extranonce1: extranonce1, VersionMask: mask, Difficulty: difficulty}
		s.FromSubmit(&sub)
		res := j.Validate(&s)
		if res.Reason == job.ReasonNone {
			hdr := j.Header(s.Extranonce1, s.Extranonce2, s.NTime, s.Nonce, res.Version)
			bh := j.BlockHeader(s.Extranonce1, s.Extranonce2, s.NTime, s.Nonce, res.Version)
			if bh.BlockHash() != res.Hash {
				t.Fatalf("wire.BlockHeader hash %s, Validate %s (header %x)", bh.BlockHash(), res.Hash, hdr)
			}
			if again := j.Validate(&s); again.Reason != job.ReasonDuplicate {
				t.Fatalf("resubmission: %q, want duplicate", again.Reason)
			}
		}
		if res.Hashed != (res.Reason == job.ReasonNone || res.Reason == job.ReasonLowDifficulty) {
			t.Fatalf("reason %q with hashed=%v", res.Reason, res.Hashed)
		}
	})
}

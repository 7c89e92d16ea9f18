package events

import (
	"bytes"
	"encoding/json"
	"testing"
)

// segmentOf builds a segment file holding events with seqs 1..n.
func segmentOf(n int) []byte {
	b := []byte(segMagic)
	for i := 1; i <= n; i++ {
		b = append(b, frame(encodeEvent(Event{Seq: uint64(i), Component: "switcher", Kind: "transition",
			Subject: "GPU-1", From: "MINING", To: "STOPPING_MINER", Reason: "contract_start"}))...)
	}
	return b
}

// FuzzDecodeSegment feeds arbitrary bytes to the on-disk decoder: it must
// not panic, the valid prefix must be exactly the records it returns,
// framed again, and their sequence numbers must grow.
func FuzzDecodeSegment(f *testing.F) {
	full := segmentOf(3)
	f.Add([]byte{})
	f.Add([]byte(segMagic))
	f.Add([]byte("PXDJ"))
	f.Add(make([]byte, 64))
	f.Add(full)
	f.Add(full[:len(full)-7])
	f.Add(append(bytes.Clone(full), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0))
	f.Add([]byte("not a journal at all"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, valid, err := decodeSegment(b)
		if err != nil {
			if recs != nil || valid != 0 {
				t.Fatalf("error %v with %d records, %d valid", err, len(recs), valid)
			}
			return
		}
		if valid < 0 || valid > int64(len(b)) || (valid > 0 && valid < headerSize) {
			t.Fatalf("valid %d of %d bytes", valid, len(b))
		}
		if valid == 0 {
			if len(recs) != 0 {
				t.Fatalf("%d records in an empty segment", len(recs))
			}
			return
		}
		again := []byte(segMagic)
		var last uint64
		for _, r := range recs {
			again = append(again, frame(r.raw)...)
			if r.seq <= last {
				t.Fatalf("seq %d after %d", r.seq, last)
			}
			last = r.seq
			if !json.Valid(r.raw) {
				t.Fatalf("record %d is not JSON: %q", r.seq, r.raw)
			}
		}
		if !bytes.Equal(again, b[:valid]) {
			t.Fatalf("the valid prefix (%d bytes) is not its records framed again (%d bytes)", valid, len(again))
		}
	})
}

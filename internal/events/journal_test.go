package events

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openT(t *testing.T, dir string, size int64) *Log {
	t.Helper()
	l, err := Open(dir, size)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func closeT(t *testing.T, l *Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func seqs(evs []Event) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// A reopened journal serves the earlier boot's events with their boot id,
// continues the sequence numbers, and filters across boots.
func TestJournalAcrossBoots(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, MinFileBytes)
	boot1 := l.Boot()
	for i := 1; i <= 4; i++ {
		comp := "stratum"
		if i%2 == 0 {
			comp = "switcher"
		}
		l.Add(Event{Component: comp, Kind: "k", Subject: fmt.Sprint(i), Reason: "r", Details: map[string]any{"n": i}})
	}
	if st := l.Status(); !st.Durable || st.Events != 4 || st.Recovered.Events != 0 || st.Dir != dir {
		t.Fatalf("first boot status %+v", st)
	}
	closeT(t, l)

	l = openT(t, dir, MinFileBytes)
	defer closeT(t, l)
	if l.Boot() == boot1 || len(l.Boot()) != 16 {
		t.Fatalf("second boot id %q (first %q): want a new 16-hex id", l.Boot(), boot1)
	}
	if e := l.Add(Event{Component: "switcher", Kind: "k", Subject: "5", Reason: "after the restart"}); e.Seq != 5 || e.Boot != l.Boot() {
		t.Fatalf("first event of the second boot: %+v, want seq 5 with the new boot", e)
	}
	if st := l.Status(); st.Recovered.Events != 4 || st.Recovered.TornBytes != 0 || st.OldestSeq != 1 || st.Events != 5 {
		t.Errorf("second boot status %+v", st)
	}
	tests := []struct {
		name string
		q    Query
		want []uint64
	}{
		{"all, oldest first", Query{}, []uint64{1, 2, 3, 4, 5}},
		{"by component across boots", Query{Component: "switcher"}, []uint64{2, 4, 5}},
		{"by subject", Query{Subject: "3"}, []uint64{3}},
		{"after the last of the first boot", Query{After: 4}, []uint64{5}},
		{"after, with a component", Query{After: 2, Component: "switcher"}, []uint64{4, 5}},
		{"limit keeps the newest", Query{Limit: 2}, []uint64{4, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := seqs(l.List(tc.q)); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	all := l.List(Query{})
	for _, e := range all {
		want := boot1
		if e.Seq == 5 {
			want = l.Boot()
		}
		if e.Boot != want {
			t.Errorf("event %d boot %q, want %q", e.Seq, e.Boot, want)
		}
		if e.Time.Location() != time.UTC {
			t.Errorf("event %d time %v, want UTC", e.Seq, e.Time)
		}
	}
	if all[1].Details["n"] != 2.0 || all[1].Subject != "2" || all[1].Reason != "r" {
		t.Errorf("event 2 came back as %+v", all[1])
	}
}

// The files never hold more than the configured size; the newest events
// are kept, in order, without gaps, and come back after a reopen.
func TestJournalStaysWithinItsSize(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, MinFileBytes)
	const n = 2000
	for i := 1; i <= n; i++ {
		l.Add(Event{Component: "switcher", Kind: "transition", Subject: fmt.Sprintf("GPU-%04d", i%8), From: "MINING",
			To: "STOPPING_MINER", Reason: "contract_start", Details: map[string]any{"message": strings.Repeat("x", i%200)}})
		if i%100 == 0 {
			if size := fileBytes(t, dir); size > MinFileBytes {
				t.Fatalf("after %d events the files hold %d bytes, over %d", i, size, MinFileBytes)
			}
		}
	}
	st := l.Status()
	got := seqs(l.List(Query{}))
	if len(got) != st.Events || got[len(got)-1] != n || got[0] != st.OldestSeq || len(got) < 50 {
		t.Fatalf("kept %d events from %d (status %+v)", len(got), got[0], st)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("gap between %d and %d", got[i-1], got[i])
		}
	}
	if st.Bytes != fileBytes(t, dir) || st.Bytes < MinFileBytes/2 {
		t.Errorf("status says %d bytes, the files hold %d", st.Bytes, fileBytes(t, dir))
	}
	closeT(t, l)
	l = openT(t, dir, MinFileBytes)
	defer closeT(t, l)
	if again := seqs(l.List(Query{})); fmt.Sprint(again) != fmt.Sprint(got) {
		t.Errorf("after reopen: %d events from %d, want %d from %d", len(again), again[0], len(got), got[0])
	}
}

func fileBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, name := range SegmentNames {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// writeJournal writes n events into a fresh journal in dir and returns the
// bytes of the segment they are in.
func writeJournal(t *testing.T, dir string, n int) []byte {
	t.Helper()
	l := openT(t, dir, 1<<20)
	for i := 1; i <= n; i++ {
		l.Add(Event{Component: "switcher", Kind: "transition", Subject: "GPU-1", From: "A", To: "B", Reason: fmt.Sprint("step ", i)})
	}
	closeT(t, l)
	b, err := os.ReadFile(filepath.Join(dir, SegmentNames[0]))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lastRecordStart is where the segment's last record begins.
func lastRecordStart(t *testing.T, seg []byte) int64 {
	t.Helper()
	recs, valid, err := decodeSegment(seg)
	if err != nil || valid != int64(len(seg)) || len(recs) == 0 {
		t.Fatalf("a clean segment decodes to %d records, %d of %d bytes, %v", len(recs), valid, len(seg), err)
	}
	return valid - recs[len(recs)-1].size()
}

// checkRecovered opens a journal whose last record was damaged: the first
// n-1 events come back, the torn bytes are counted, and a new event after
// it survives another reopen (appends never land behind garbage).
func checkRecovered(t *testing.T, dir string, n int, torn int64) {
	t.Helper()
	l := openT(t, dir, 1<<20)
	want := []uint64{}
	for i := 1; i < n; i++ {
		want = append(want, uint64(i))
	}
	if got := seqs(l.List(Query{})); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("recovered %v, want %v", got, want)
	}
	if st := l.Status(); st.Recovered.TornBytes != torn || st.Recovered.Events != n-1 {
		t.Fatalf("recovery %+v, want %d events and %d torn bytes", st.Recovered, n-1, torn)
	}
	e := l.Add(Event{Component: "switcher", Kind: "k", Reason: "after the crash"})
	closeT(t, l)
	if e.Seq != uint64(n) {
		t.Fatalf("the next event got seq %d, want %d", e.Seq, n)
	}
	l = openT(t, dir, 1<<20)
	defer closeT(t, l)
	got := l.List(Query{})
	if len(got) != n || got[n-1].Reason != "after the crash" || l.Status().Recovered.TornBytes != 0 {
		t.Fatalf("after the crash and one more event: %v (status %+v)", seqs(got), l.Status())
	}
}

// A kill -9 or a power loss in the middle of the last record's write: the
// file is cut at every byte of that record.
func TestJournalTornTailAtEveryOffset(t *testing.T) {
	const n = 5
	seg := writeJournal(t, t.TempDir(), n)
	start := lastRecordStart(t, seg)
	for cut := start; cut < int64(len(seg)); cut++ {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, SegmentNames[0]), seg[:cut], 0o640); err != nil {
				t.Fatal(err)
			}
			checkRecovered(t, dir, n, cut-start)
		})
	}
}

// Garbage in the last record (a block that never reached the disk, a bit
// flip): every byte of it is garbled in turn.
func TestJournalGarbledTailAtEveryOffset(t *testing.T) {
	const n = 5
	seg := writeJournal(t, t.TempDir(), n)
	start := lastRecordStart(t, seg)
	for off := start; off < int64(len(seg)); off++ {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			b := bytes.Clone(seg)
			b[off] ^= 0xff
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, SegmentNames[0]), b, 0o640); err != nil {
				t.Fatal(err)
			}
			checkRecovered(t, dir, n, int64(len(b))-start)
		})
	}
	t.Run("garbage after the last record", func(t *testing.T) {
		garbage := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5} // a record header that runs past the end
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, SegmentNames[0]), append(bytes.Clone(seg), garbage...), 0o640); err != nil {
			t.Fatal(err)
		}
		checkRecovered(t, dir, n+1, int64(len(garbage)))
	})
}

// A garbled record in the middle ends what is read: the records after it
// are dropped with it (they cannot be trusted to follow it), and the
// journal continues from there.
func TestJournalGarbledMiddle(t *testing.T) {
	seg := writeJournal(t, t.TempDir(), 5)
	recs, _, _ := decodeSegment(seg)
	third := headerSize + recs[0].size() + recs[1].size()
	seg[third+frameHeader+3] ^= 0x01
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SegmentNames[0]), seg, 0o640); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, dir, 3, int64(len(seg))-third)
}

func TestJournalOpenErrors(t *testing.T) {
	t.Run("a second open of the same directory", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, MinFileBytes)
		defer closeT(t, l)
		if _, err := Open(dir, MinFileBytes); err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Fatalf("second Open: %v", err)
		}
	})
	t.Run("a file proxyd did not write", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, SegmentNames[1]), []byte(`{"not": "a journal"}`), 0o640); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, MinFileBytes)
		if err == nil || !strings.Contains(err.Error(), "move it aside") || !strings.Contains(err.Error(), SegmentNames[1]) {
			t.Fatalf("Open: %v", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, SegmentNames[1])); string(b) != `{"not": "a journal"}` {
			t.Errorf("the foreign file was changed: %q", b)
		}
	})
	t.Run("sizes out of range", func(t *testing.T) {
		for _, size := range []int64{0, MinFileBytes - 1, MaxFileBytes + 1} {
			if _, err := Open(t.TempDir(), size); err == nil {
				t.Errorf("Open with %d bytes: no error", size)
			}
		}
	})
	t.Run("a directory that cannot be created", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(filepath.Join(file, "sub"), MinFileBytes); err == nil {
			t.Fatal("Open under a file: no error")
		}
	})
}

// A crash while a segment was being reset leaves an empty file, part of a
// header or zeros: an empty segment, not an error.
func TestJournalTornHeader(t *testing.T) {
	for _, content := range [][]byte{nil, []byte("PXD"), make([]byte, 5), make([]byte, 4096)} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, SegmentNames[0]), content, 0o640); err != nil {
			t.Fatal(err)
		}
		checkRecovered(t, dir, 1, int64(len(content)))
	}
}

// After a crash in a rotation the older segment may still hold events the
// active one supersedes: only the older ones are served.
func TestJournalOverlappingSegments(t *testing.T) {
	dir := t.TempDir()
	seg := writeJournal(t, dir, 6) // seqs 1..6 in segment 0
	recs, _, _ := decodeSegment(seg)
	// Segment 1 gets seqs 4..6 as the active one; segment 0 keeps 1..3 only.
	other := []byte(segMagic)
	for _, r := range recs[3:] {
		other = append(other, frame(r.raw)...)
	}
	if err := os.WriteFile(filepath.Join(dir, SegmentNames[1]), other, 0o640); err != nil {
		t.Fatal(err)
	}
	// Make segment 1 the newer: append seq 7 to it.
	l := openT(t, dir, 1<<20)
	if got := seqs(l.List(Query{})); fmt.Sprint(got) != "[1 2 3 4 5 6]" {
		t.Fatalf("overlap served as %v", got)
	}
	if e := l.Add(Event{Component: "c", Reason: "r"}); e.Seq != 7 {
		t.Fatalf("next seq %d", e.Seq)
	}
	closeT(t, l)
}

// Whatever an event holds, it is stored within MaxRecordBytes and says
// what was dropped.
func TestJournalOversizeAndUnencodableEvents(t *testing.T) {
	l := openT(t, t.TempDir(), MinFileBytes)
	defer closeT(t, l)
	l.Add(Event{Component: "switcher", Kind: "k", Subject: strings.Repeat("é", 40000), Reason: strings.Repeat("r", 200000),
		Details: map[string]any{"big": strings.Repeat("d", 100000)}})
	l.Add(Event{Component: "stratum", Kind: "k", Reason: "nan", Details: map[string]any{"share": math.NaN()}})
	got := l.List(Query{})
	if len(got) != 2 {
		t.Fatalf("%d events", len(got))
	}
	big, nan := got[0], got[1]
	if len(big.Reason) > maxFieldBytes+len("…") || !strings.HasSuffix(big.Subject, "…") || big.Details["big"] != nil ||
		!strings.Contains(fmt.Sprint(big.Details["truncated"]), "over the journal's bound") {
		t.Errorf("oversize event stored as reason %d bytes, subject %d bytes, details %v", len(big.Reason), len(big.Subject), big.Details)
	}
	if nan.Reason != "nan" || !strings.Contains(fmt.Sprint(nan.Details["unencodable_details"]), "NaN") {
		t.Errorf("unencodable event stored as %+v", nan)
	}
	if st := l.Status(); st.WriteErrors != 0 || !st.Durable {
		t.Errorf("status %+v", st)
	}
}

// A write the disk refuses keeps the event in memory, counts the error and
// reports the journal as not durable.
func TestJournalWriteErrorKeepsTheEvent(t *testing.T) {
	l := openT(t, t.TempDir(), MinFileBytes)
	l.Add(Event{Component: "c", Reason: "on disk"})
	_ = l.disk.segs[l.disk.active].f.Close() // the disk goes away under it
	l.Add(Event{Component: "c", Reason: "memory only"})
	st := l.Status()
	if st.Durable || st.WriteErrors != 1 || !strings.Contains(st.LastError, "writing") {
		t.Errorf("status after a failed write: %+v", st)
	}
	if got := l.List(Query{}); len(got) != 2 || got[1].Reason != "memory only" {
		t.Errorf("events %+v", got)
	}
	if l.Durable() {
		t.Error("Durable() after a failed write")
	}
	_ = l.Close()
	l.Add(Event{Component: "c", Reason: "after close"})
	if got := l.List(Query{}); len(got) != 3 || l.Durable() {
		t.Errorf("after close: %d events, durable %v", len(got), l.Durable())
	}
}

func TestMemoryLogStatus(t *testing.T) {
	l := New(3)
	if st := l.Status(); st.Durable || st.Events != 0 || st.OldestSeq != 0 || st.Boot == "" {
		t.Errorf("empty: %+v", st)
	}
	for range 5 {
		l.Add(Event{Component: "c", Reason: "r"})
	}
	if st := l.Status(); st.Durable || st.Events != 3 || st.OldestSeq != 3 {
		t.Errorf("full: %+v", st)
	}
	if e := l.List(Query{})[0]; e.Boot != l.Boot() {
		t.Errorf("boot %q, want %q", e.Boot, l.Boot())
	}
	if l.Close() != nil || l.Durable() {
		t.Error("an in-memory log is never durable and closes without error")
	}
}

// Many goroutines add and read at once (run with -race): the one mutex
// keeps the files and the index consistent.
func TestJournalConcurrent(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, MinFileBytes)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				l.Add(Event{Component: "c", Subject: fmt.Sprint(g), Reason: "r"})
				if i%50 == 0 {
					_ = l.List(Query{Subject: fmt.Sprint(g), Limit: 5})
					_ = l.Status()
				}
			}
		}()
	}
	wg.Wait()
	got := seqs(l.List(Query{}))
	closeT(t, l)
	if got[len(got)-1] != 8*300 {
		t.Fatalf("last seq %d, want %d", got[len(got)-1], 8*300)
	}
	l = openT(t, dir, MinFileBytes)
	defer closeT(t, l)
	if again := seqs(l.List(Query{})); fmt.Sprint(again) != fmt.Sprint(got) {
		t.Errorf("reopened: %d events, want %d", len(again), len(got))
	}
}

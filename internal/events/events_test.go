package events

import (
	"fmt"
	"sync"
	"testing"
)

func TestLog(t *testing.T) {
	l := New(4)
	for i := 1; i <= 6; i++ {
		comp := "stratum"
		if i%2 == 0 {
			comp = "switcher"
		}
		l.Add(Event{Component: comp, Kind: "k", Subject: fmt.Sprint(i), Reason: "r"})
	}
	tests := []struct {
		name string
		q    Query
		want []uint64
	}{
		{"ring keeps the newest", Query{}, []uint64{3, 4, 5, 6}},
		{"by component", Query{Component: "switcher"}, []uint64{4, 6}},
		{"by subject", Query{Subject: "5"}, []uint64{5}},
		{"after", Query{After: 4}, []uint64{5, 6}},
		{"limit keeps newest", Query{Limit: 2}, []uint64{5, 6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := l.List(tc.q)
			var seqs []uint64
			for _, e := range got {
				seqs = append(seqs, e.Seq)
				if e.Time.IsZero() || e.Time.Location().String() != "UTC" {
					t.Errorf("event %d time %v, want a UTC stamp", e.Seq, e.Time)
				}
			}
			if fmt.Sprint(seqs) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", seqs, tc.want)
			}
		})
	}
}

func TestLogConcurrent(t *testing.T) {
	l := New(0)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 600; i++ {
				l.Add(Event{Component: "c", Reason: "r"})
				if i%50 == 0 {
					_ = l.List(Query{Limit: 5})
				}
			}
		}()
	}
	wg.Wait()
	if got := len(l.List(Query{})); got != DefaultSize {
		t.Fatalf("kept %d, want %d", got, DefaultSize)
	}
}

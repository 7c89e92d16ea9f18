package events

import (
	"fmt"
	"testing"
)

// benchEvent is shaped like a switcher transition, the most frequent
// durable event (~330 bytes on disk).
func benchEvent(i int) Event {
	return Event{Component: "switcher", Kind: "transition", Subject: "GPU-3f2a9c1e-77b0-4a4e-9d43-0c8a7e1f5b21",
		From: "MINING", To: "STOPPING_MINER", Reason: "contract_start",
		Details: map[string]any{"message": fmt.Sprintf("contract acme-llm wants this GPU (%d)", i%10),
			"gpu": "GPU-3f2a9c1e-77b0-4a4e-9d43-0c8a7e1f5b21", "contract": "acme-llm"}}
}

func BenchmarkAdd(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		l := New(0)
		e := benchEvent(1)
		b.ReportAllocs()
		for b.Loop() {
			l.Add(e)
		}
	})
	b.Run("durable", func(b *testing.B) {
		l, err := Open(b.TempDir(), DefaultFileBytes)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		e := benchEvent(1)
		b.ReportAllocs()
		for b.Loop() {
			l.Add(e)
		}
	})
}

// BenchmarkOpenFull measures recovery: reading back a full journal of the
// default size.
func BenchmarkOpenFull(b *testing.B) {
	dir := b.TempDir()
	l, err := Open(dir, DefaultFileBytes)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; l.Status().Bytes < DefaultFileBytes-4096; i++ {
		l.Add(benchEvent(i))
	}
	events := l.Status().Events
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l, err := Open(dir, DefaultFileBytes)
		if err != nil {
			b.Fatal(err)
		}
		if n := l.Status().Recovered.Events; n != events {
			b.Fatalf("recovered %d of %d", n, events)
		}
		_ = l.Close()
	}
	b.ReportMetric(float64(events), "events")
}

func BenchmarkListDurable(b *testing.B) {
	l, err := Open(b.TempDir(), DefaultFileBytes)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for i := range 10000 {
		l.Add(benchEvent(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		if n := len(l.List(Query{Limit: 200})); n != 200 {
			b.Fatal(n)
		}
	}
}

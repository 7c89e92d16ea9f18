package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestUnwritten(t *testing.T) {
	lines := [][]byte{[]byte("abc"), []byte("de"), []byte("fgh")}
	tests := []struct {
		wrote int
		want  []string
	}{
		{0, []string{"abc", "de", "fgh"}},
		{1, []string{"bc", "de", "fgh"}},
		{3, []string{"de", "fgh"}},
		{4, []string{"e", "fgh"}},
		{5, []string{"fgh"}},
		{7, []string{"h"}},
		{8, nil},
	}
	for _, tt := range tests {
		var got []string
		for _, l := range unwritten(lines, tt.wrote) {
			got = append(got, string(l))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("unwritten(wrote=%d) = %q, want %q", tt.wrote, got, tt.want)
		}
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A peer that stops reading fills the socket: the immediate write comes up
// short, and the rest, plus everything sent after, must arrive complete and
// in order once the peer reads again, with prio lines never splitting one.
func TestWriteQueueShortWriteKeepsLinesWhole(t *testing.T) {
	peer, conn := tcpPair(t)
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096) // fill quickly
	}
	failed := make(chan error, 1)
	q := newWriteQueue(conn, 64<<20, 10*time.Second, false, nil, func(err error) { failed <- err })
	if q.raw == nil {
		t.Fatal("a TCP connection should get the immediate-write path")
	}
	var want bytes.Buffer
	line := func(i int, prio bool) []byte {
		return fmt.Appendf(nil, "{\"n\":%d,\"prio\":%v,\"pad\":%q}\n", i, prio, bytes.Repeat([]byte{'x'}, 700))
	}
	total := 0
	for i := range 2000 { // ~1.4 MB: far beyond the socket buffers
		prio := i%97 == 0
		l := line(i, prio)
		if err := q.send(prio, l); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		total += len(l)
		if !prio {
			want.Write(l)
		}
	}
	got := make([]byte, 0, total)
	buf := make([]byte, 64<<10)
	_ = peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(got) < total {
		n, err := peer.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading after %d of %d bytes: %v", len(got), total, err)
		}
	}
	select {
	case err := <-failed:
		t.Fatalf("queue failed: %v", err)
	default:
	}
	// Every line whole; the non-prio ones in their order.
	var normal bytes.Buffer
	nprio := 0
	for _, l := range bytes.SplitAfter(got, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if !bytes.HasPrefix(l, []byte(`{"n":`)) || !bytes.HasSuffix(l, []byte("\"}\n")) {
			t.Fatalf("a line was split or mangled: %.80q", l)
		}
		if bytes.Contains(l, []byte(`"prio":true`)) {
			nprio++
			continue
		}
		normal.Write(l)
	}
	if !bytes.Equal(normal.Bytes(), want.Bytes()) {
		t.Fatalf("normal lines out of order or missing: got %d bytes, want %d", normal.Len(), want.Len())
	}
	if nprio != 21 {
		t.Fatalf("%d prio lines arrived, want 21", nprio)
	}
}

// One line far larger than the socket buffers: the immediate write takes
// part of it, and the flusher must send exactly the rest, then what follows.
func TestWriteQueueSplitsAtTheRightByte(t *testing.T) {
	peer, conn := tcpPair(t)
	q := newWriteQueue(conn, 64<<20, 10*time.Second, false, nil, func(err error) { t.Errorf("queue failed: %v", err) })
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte('a' + i%23) // no period shared with the socket buffers
	}
	big[len(big)-1] = '\n'
	next := []byte("{\"next\":true}\n")
	if err := q.send(false, big); err != nil {
		t.Fatal(err)
	}
	if err := q.send(true, next); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, big...), next...)
	got := make([]byte, 0, len(want))
	buf := make([]byte, 256<<10)
	_ = peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(got) < len(want) {
		n, err := peer.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading after %d of %d bytes: %v", len(got), len(want), err)
		}
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("stream differs from byte %d of %d", i, len(want))
	}
}

// A flush sets a write deadline; an immediate write long after it must not
// fail on that stale deadline (it did: 7 of 10,000 load-test miners were
// dropped as write_failed).
func TestWriteQueueImmediateWriteAfterFlushDeadline(t *testing.T) {
	peer, conn := tcpPair(t)
	failed := make(chan error, 1)
	q := newWriteQueue(conn, 64<<20, 50*time.Millisecond, false, nil, func(err error) { failed <- err })
	big := bytes.Repeat([]byte{'a'}, 8<<20) // goes through the flusher, which sets a deadline
	big[len(big)-1] = '\n'
	if err := q.send(false, big); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	got := 0
	_ = peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	for got < len(big) {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	for !q.idle() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // past the flush's deadline
	if err := q.send(false, []byte("later\n")); err != nil {
		t.Fatalf("send after the flush deadline passed: %v", err)
	}
	select {
	case err := <-failed:
		t.Fatalf("queue failed: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// The fan-out path: a send to an idle miner is one write and no allocation.
func TestWriteQueueImmediateWriteAllocatesNothing(t *testing.T) {
	peer, conn := tcpPair(t)
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	q := newWriteQueue(conn, 64<<20, 10*time.Second, false, nil, func(err error) { t.Errorf("queue failed: %v", err) })
	line := []byte(`{"id":null,"method":"mining.notify","params":["1"]}` + "\n")
	allocs := testing.AllocsPerRun(200, func() {
		if err := q.send(false, line); err != nil {
			t.Fatal(err)
		}
		for !q.idle() { // a short write would hand over to the flusher
			time.Sleep(time.Millisecond)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per send to an idle queue, want 0", allocs)
	}
}

// fakeClock is a writeQueue clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// A peer that never reads: the batch being written counts toward the
// queue's limit, so once more than the limit is held and nothing was
// written for stallAfter, the next send fails. (The batch in flight was not
// counted: the queue looked empty, its stall clock restarted with every
// send, and a non-reading miner held megabytes until the write deadline.)
func TestWriteQueueCountsTheBatchBeingWritten(t *testing.T) {
	peer, conn := tcpPair(t)
	_ = peer // never read
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	failed := make(chan error, 1)
	const limit = 256 << 10
	q := newWriteQueue(conn, limit, time.Minute, false, nil, func(err error) { failed <- err })
	q.now = clock.now
	big := bytes.Repeat([]byte{'x'}, 2<<20) // far more than the socket buffers take
	big[len(big)-1] = '\n'
	if err := q.send(false, big); err != nil {
		t.Fatal(err)
	}
	waitWriting(t, q) // the flusher is blocked writing the rest of the line
	if h := q.held(); h <= limit {
		t.Fatalf("held %d bytes; the socket took more than this test assumes", h)
	}
	small := []byte("{\"id\":null}\n")
	if err := q.send(false, small); err != nil {
		t.Fatalf("a send within stallAfter of progress must be queued: %v", err)
	}
	clock.advance(stallAfter + time.Second)
	if err := q.send(false, small); !errors.Is(err, errQueueFull) {
		t.Fatalf("send with %d bytes held and nothing written for %s: %v, want errQueueFull", q.held(), stallAfter+time.Second, err)
	}
}

// A send that would take what is held past hardLimitFactor × the limit
// fails at once, stalled or not, counting the batch being written.
func TestWriteQueueHardLimitCountsTheBatchBeingWritten(t *testing.T) {
	peer, conn := tcpPair(t)
	_ = peer // never read
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	const limit = 64 << 10
	q := newWriteQueue(conn, limit, time.Minute, false, nil, func(error) {})
	q.now = clock.now
	big := bytes.Repeat([]byte{'x'}, 12*limit) // within the hard limit, beyond the socket buffers
	big[len(big)-1] = '\n'
	if err := q.send(false, big); err != nil {
		t.Fatal(err)
	}
	waitWriting(t, q)
	line := bytes.Repeat([]byte{'y'}, 1<<10)
	line[len(line)-1] = '\n'
	sent := 0
	var err error
	for sent < 64*hardLimitFactor*limit { // bounded: far past the hard limit
		if err = q.send(false, line); err != nil {
			break
		}
		sent += len(line)
	}
	if !errors.Is(err, errQueueFull) {
		t.Fatalf("sent %d bytes to a peer that never reads without errQueueFull (%v)", sent, err)
	}
	if h := q.held(); h > hardLimitFactor*limit {
		t.Fatalf("queue holds %d bytes, more than %d × its %d-byte limit", h, hardLimitFactor, limit)
	}
}

// waitWriting waits until q's flusher is blocked writing with nothing else queued.
func waitWriting(t *testing.T, q *writeQueue) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		writing, queued := q.writing, q.queued
		q.mu.Unlock()
		if writing > 0 && queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flusher never started writing (writing %d, queued %d)", writing, queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// takeBatch keeps lines whole and in order, and a batch within
// maxBatchBytes unless one line alone is larger.
func TestTakeBatch(t *testing.T) {
	l := func(n int) []byte { return make([]byte, n) }
	tests := []struct {
		name      string
		lines     []int
		wantTaken int
		wantSize  int
	}{
		{"empty", nil, 0, 0},
		{"all fit", []int{100, 200}, 2, 300},
		{"stops at the cap", []int{maxBatchBytes / 2, maxBatchBytes / 2, 1}, 2, maxBatchBytes},
		{"one oversized line alone", []int{maxBatchBytes * 3, 5}, 1, maxBatchBytes * 3},
		{"oversized after others waits", []int{10, maxBatchBytes * 3}, 1, 10},
	}
	for _, tt := range tests {
		var src [][]byte
		for _, n := range tt.lines {
			src = append(src, l(n))
		}
		var batch [][]byte
		size := 0
		rest := takeBatch(src, &batch, &size)
		if len(batch) != tt.wantTaken || size != tt.wantSize || len(rest) != len(tt.lines)-tt.wantTaken {
			t.Errorf("%s: took %d lines (%d bytes), left %d; want %d lines (%d bytes)", tt.name, len(batch), size, len(rest), tt.wantTaken, tt.wantSize)
		}
		for i := range rest {
			if len(rest[i]) != tt.lines[tt.wantTaken+i] {
				t.Errorf("%s: rest out of order", tt.name)
			}
		}
	}
}

package stratumsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
)

// Call sends an arbitrary request on the current connection and waits for
// its answer: the raw result, or an *RPCError (wrapped) for an error
// answer.
func (m *Miner) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	if params == nil {
		params = []any{}
	}
	m.mu.Lock()
	mc, err := m.currentLocked()
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ch := make(chan callResult, 1)
	if err := m.sendRequest(mc, method, params, &pendingReq{kind: reqCall, call: ch}, nil); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("stratumsim: %s: %w", method, r.err)
		}
		return r.result, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("stratumsim: %s: %w", method, ctx.Err())
	}
}

// rawConn returns the current connection for misbehaviours.
func (m *Miner) rawConn() (*minerConn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.currentLocked()
}

// SendRaw writes b as is (add the '\n' yourself) on the current connection.
func (m *Miner) SendRaw(b []byte) error {
	mc, err := m.rawConn()
	if err != nil {
		return err
	}
	return m.write(mc, b)
}

// SendGarbage writes n newline-terminated lines of random printable
// non-JSON bytes (deterministic from Seed).
func (m *Miner) SendGarbage(n int) error {
	var b bytes.Buffer
	m.mu.Lock()
	for range n {
		l := 8 + m.rng.IntN(120)
		b.WriteString("\x00garbage{")
		for range l {
			b.WriteByte(byte(0x21 + m.rng.IntN(0x5e)))
		}
		b.WriteByte('\n')
	}
	m.mu.Unlock()
	return m.SendRaw(b.Bytes())
}

// SendOversized writes n bytes of '{' and 'a' with no newline, in 64 KiB
// chunks, stopping at the first failed write (typically because the peer
// closed the connection on its line cap; that error is returned).
func (m *Miner) SendOversized(n int) error {
	mc, err := m.rawConn()
	if err != nil {
		return err
	}
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	chunk[0] = '{'
	for sent := 0; sent < n; {
		c := chunk[:min(len(chunk), n-sent)]
		if err := m.write(mc, c); err != nil {
			return err
		}
		chunk[0] = 'a'
		sent += len(c)
	}
	return nil
}

// Flood writes n requests of method/params back to back (in batches of
// 256 lines) without waiting for answers; the answers are counted in
// MinerStats.UnexpectedResponses.
func (m *Miner) Flood(n int, method string, params any) error {
	if params == nil {
		params = []any{}
	}
	mc, err := m.rawConn()
	if err != nil {
		return err
	}
	var b []byte
	for i := range n {
		b = append(b, requestLine(uint64(1_000_000_000+i), method, params)...)
		if (i+1)%256 == 0 || i == n-1 {
			if err := m.write(mc, b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	return nil
}

// StopReading makes the reader goroutine stop reading the socket (after
// the line in progress), so the peer's writes back up (set
// SocketReadBuffer small to make that quick). Writes by the miner still
// work. When the peer gives up and closes while this side's window is
// zero, the kernel may discard its orphaned socket without a FIN or RST
// reaching this side: assert on the server's view, not on this miner's
// disconnect.
func (m *Miner) StopReading() {
	m.mu.Lock()
	if m.paused == nil {
		m.paused = make(chan struct{})
	}
	m.mu.Unlock()
}

// ResumeReading undoes StopReading.
func (m *Miner) ResumeReading() {
	m.mu.Lock()
	if m.paused != nil {
		close(m.paused)
		m.paused = nil
	}
	m.mu.Unlock()
}

// Disconnect closes the current connection with a FIN (the miner then
// reconnects only with AutoReconnect).
func (m *Miner) Disconnect() {
	if mc, err := m.rawConn(); err == nil {
		_ = mc.c.Close()
	}
}

// Abort closes the current connection abruptly with a TCP RST (SO_LINGER
// 0); the miner then reconnects only with AutoReconnect.
func (m *Miner) Abort() {
	mc, err := m.rawConn()
	if err != nil {
		return
	}
	if tc, ok := mc.c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = mc.c.Close()
}

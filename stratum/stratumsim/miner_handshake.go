package stratumsim

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// handshake is the per-connection handshake state machine, guarded by
// Miner.mu. The reader goroutine advances it on each answer.
type handshake struct {
	steps    []hsStep
	sent     int
	answered int
	done     bool
	err      error
	ready    chan struct{} // closed when done
}

// hsStep is one handshake request. apply runs with Miner.mu held.
type hsStep struct {
	method string
	params any
	apply  func(m *Miner, result json.RawMessage, e *RPCError) error
}

// newHandshakeLocked builds the style's handshake for a connection to
// remote ("host:port", which Braiins OS puts in its subscribe).
func (m *Miner) newHandshakeLocked(remote string) *handshake {
	o := &m.opts
	hs := &handshake{ready: make(chan struct{})}
	rolling := !o.NoVersionRolling && o.Style != StylePlain
	configure := hsStep{"mining.configure", []any{
		[]string{"version-rolling"},
		map[string]any{"version-rolling.mask": hex32(o.VersionMask), "version-rolling.min-bit-count": 2},
	}, (*Miner).applyConfigure}
	subscribe := hsStep{"mining.subscribe", []any{o.UserAgent}, (*Miner).applySubscribe}
	authorize := hsStep{"mining.authorize", []any{o.User, o.Password}, (*Miner).applyAuthorize}
	suggest := hsStep{"mining.suggest_difficulty", []any{o.SuggestDifficulty}, applyIgnore}
	xnsub := hsStep{"mining.extranonce.subscribe", []any{}, applyIgnore}

	var s []hsStep
	add := func(st hsStep, ok bool) {
		if ok {
			s = append(s, st)
		}
	}
	switch o.Style {
	case StylePlain:
		add(subscribe, true)
		add(xnsub, o.ExtranonceSubscribe)
		add(authorize, true)
	case StyleAntminer:
		add(configure, rolling)
		add(subscribe, true)
		add(xnsub, o.ExtranonceSubscribe)
		add(authorize, true)
	case StyleWhatsminer:
		var session any // null on a first connect, the old extranonce1 after
		if len(m.e1) > 0 {
			session = hex.EncodeToString(m.e1)
		}
		subscribe.params = []any{o.UserAgent, session}
		add(suggest, true)
		add(subscribe, true)
		add(xnsub, o.ExtranonceSubscribe)
		add(authorize, true)
		add(configure, rolling)
	case StyleBraiinsOS:
		subscribe.params = []any{o.UserAgent, nil, remote, nil}
		add(subscribe, true)
		add(xnsub, o.ExtranonceSubscribe)
		add(configure, rolling)
		add(authorize, true)
	case StyleBitaxe:
		add(subscribe, true)
		add(xnsub, o.ExtranonceSubscribe)
		add(configure, rolling)
		add(authorize, true)
		add(suggest, true)
	case StyleNiceHash:
		add(configure, rolling)
		add(subscribe, true)
		add(xnsub, true)
		add(authorize, true)
	}
	hs.steps = s
	if len(s) == 0 { // StyleIdle: nothing to do
		hs.done = true
		close(hs.ready)
	}
	return hs
}

// hsSendNext sends the next handshake request(s): one at a time, or all
// with Pipeline.
func (m *Miner) hsSendNext(mc *minerConn) {
	for {
		m.mu.Lock()
		hs := mc.hs
		if hs.done || hs.sent >= len(hs.steps) || (!m.opts.Pipeline && hs.sent > hs.answered) {
			m.mu.Unlock()
			return
		}
		i := hs.sent
		hs.sent++
		st := hs.steps[i]
		m.mu.Unlock()
		if err := m.sendRequest(mc, st.method, st.params, &pendingReq{kind: reqHandshake, step: i}, nil); err != nil {
			m.mu.Lock()
			if !hs.done {
				m.hsFinishLocked(mc, fmt.Errorf("stratumsim: send %s: %w", st.method, err))
			}
			m.mu.Unlock()
			return
		}
	}
}

// onHandshakeAnswer applies an answer to handshake step pr.step.
func (m *Miner) onHandshakeAnswerLocked(mc *minerConn, step int, result json.RawMessage, e *RPCError) (closeConn bool) {
	hs := mc.hs
	if hs.done {
		return false
	}
	st := hs.steps[step]
	err := st.apply(m, result, e)
	hs.answered++
	switch {
	case err != nil:
		m.hsFinishLocked(mc, fmt.Errorf("stratumsim: %s: %w", st.method, err))
		return errors.Is(err, ErrUnrequestedExtension)
	case hs.answered == len(hs.steps):
		m.hsFinishLocked(mc, nil)
	}
	return false
}

func (m *Miner) hsFinishLocked(mc *minerConn, err error) {
	hs := mc.hs
	hs.done = true
	hs.err = err
	close(hs.ready)
	if err == nil {
		m.handshakes++
	} else {
		m.lastErr = err
		m.logf("handshake on connection %d: %v", mc.gen, err)
	}
	m.notifyLocked()
}

func applyIgnore(*Miner, json.RawMessage, *RPCError) error { return nil }

func (m *Miner) applySubscribe(res json.RawMessage, e *RPCError) error {
	if e != nil {
		return fmt.Errorf("%w: %w", ErrSubscribeFailed, e)
	}
	var arr []json.RawMessage
	if json.Unmarshal(res, &arr) != nil || len(arr) < 3 {
		return fmt.Errorf("%w: result %.200s", ErrSubscribeFailed, res)
	}
	var e1hex string
	var size float64
	if json.Unmarshal(arr[1], &e1hex) != nil || json.Unmarshal(arr[2], &size) != nil {
		return fmt.Errorf("%w: result %.200s", ErrSubscribeFailed, res)
	}
	e1, err := hex.DecodeString(e1hex)
	if err != nil || size < 0 || size > 32 || size != float64(int(size)) {
		return fmt.Errorf("%w: extranonce1 %q size %v", ErrSubscribeFailed, e1hex, size)
	}
	m.e1, m.e2size, m.subscribed = e1, int(size), true
	m.subResult = slices.Clone(res)
	return nil
}

func (m *Miner) applyAuthorize(res json.RawMessage, e *RPCError) error {
	if e != nil {
		return fmt.Errorf("%w: %w", ErrAuthorizeRejected, e)
	}
	var ok bool
	if json.Unmarshal(res, &ok) != nil || !ok {
		return fmt.Errorf("%w: result %.100s", ErrAuthorizeRejected, res)
	}
	m.authorized = true
	return nil
}

// applyConfigure takes the version-rolling grant. An error answer (a server
// without mining.configure) just means no version rolling.
func (m *Miner) applyConfigure(res json.RawMessage, e *RPCError) error {
	m.confResult = slices.Clone(res)
	if e != nil {
		return nil
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(res, &obj) != nil {
		return nil
	}
	for k := range obj {
		ext, _, _ := strings.Cut(k, ".")
		if ext != "version-rolling" {
			m.unrequested = append(m.unrequested, k)
		}
	}
	slices.Sort(m.unrequested)
	if len(m.unrequested) > 0 && (m.opts.Style == StyleWhatsminer || m.opts.StrictConfigure) {
		return fmt.Errorf("%w: %v", ErrUnrequestedExtension, m.unrequested)
	}
	var on bool
	var h string
	_ = json.Unmarshal(obj["version-rolling"], &on)
	_ = json.Unmarshal(obj["version-rolling.mask"], &h)
	if v, err := strconv.ParseUint(h, 16, 32); on && err == nil {
		m.grantedMask = uint32(v)
		m.mask = m.grantedMask & m.opts.VersionMask
		m.rolling = m.mask != 0
	}
	return nil
}

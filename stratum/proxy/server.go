package proxy

import (
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// server is one [[server]] listener and the miners connected to it.
type server struct {
	p      *Proxy
	cfg    ServerOptions
	log    *zap.Logger
	ln     net.Listener
	limits *connLimits
	pools  []*pool // in the order the config names them

	mu     sync.Mutex // guards miners
	miners map[*miner]struct{}
	// rl reads the miners' sockets (Linux, readloop.go); nil: a goroutine
	// per miner reads (serve). Set by accept before the first miner.
	rl *readLoop

	// router owns the listener's routing (router.go); set by New once
	// pools is complete.
	router *router
}

// accept runs until the listener closes.
func (s *server) accept() {
	defer s.p.wg.Done()
	s.startReadLoop()
	var delay time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		if s.noPool() {
			// Refuse rather than take a miner we cannot give work: its
			// firmware moves on to its own backup pool.
			s.p.metrics.connRefused.WithLabelValues(s.cfg.Name, "no_pool").Inc()
			s.log.Debug("refusing miner connection: no healthy pool", zap.String("remote", conn.RemoteAddr().String()))
			_ = conn.Close()
			continue
		}
		ip, refused := s.limits.admit(conn.RemoteAddr())
		if refused != "" {
			s.p.metrics.connRefused.WithLabelValues(s.cfg.Name, refused).Inc()
			s.log.Warn("refusing miner connection", zap.String("remote", conn.RemoteAddr().String()), zap.String("limit", refused))
			_ = conn.Close()
			continue
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
			_ = tc.SetKeepAlivePeriod(30 * time.Second)
		}
		m := newMiner(s.p, s, s.p.connSeq.Add(1), conn, ip)
		s.mu.Lock()
		s.miners[m] = struct{}{}
		s.mu.Unlock()
		s.p.metrics.minersConnected.WithLabelValues(s.cfg.Name).Inc()
		if s.p.stopping.Load() {
			// Stop may have listed the miners before this one joined: close
			// it here, so its reader ends and Stop can join it.
			m.close("shutdown", nil)
		}
		s.read(m)
	}
}

// remove forgets a closed miner and frees its connection slot.
func (s *server) remove(m *miner) {
	s.mu.Lock()
	_, ok := s.miners[m]
	delete(s.miners, m)
	s.mu.Unlock()
	if ok {
		s.limits.release(m.ip)
		s.p.metrics.minersConnected.WithLabelValues(s.cfg.Name).Dec()
	}
}

func (s *server) snapshot() []*miner {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*miner, 0, len(s.miners))
	for m := range s.miners {
		out = append(out, m)
	}
	return out
}

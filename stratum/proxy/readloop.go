package proxy

import "go.uber.org/zap"

// startReadLoop starts the epoll read loop of s (readloop_linux.go), or
// leaves s.rl nil (a goroutine per miner, serve) where there is none. Called
// by accept before the first miner.
func (s *server) startReadLoop() {
	rl, err := newReadLoop(s, s.p.metrics.downBytes.WithLabelValues(s.cfg.Name, "in"))
	if err != nil {
		s.log.Info("miners are read by a goroutine each", zap.String("why", err.Error()))
		return
	}
	s.mu.Lock() // for readers outside the miners' lifetimes (tests)
	s.rl = rl
	s.mu.Unlock()
	s.p.wg.Add(2)
	go rl.run(s.p.ctx)
	go rl.sweep(s.p.ctx, sweepInterval(s.cfg.SubscribeTimeout, s.cfg.IdleTimeout))
}

// read starts reading m: by the read loop, or by a goroutine of its own
// (TLS, no read loop, or the loop refused it).
func (s *server) read(m *miner) {
	if s.rl == nil || !s.rl.add(m) {
		s.p.serving.Add(1)
		go func() {
			defer s.p.serving.Done()
			m.serve()
		}()
	}
}

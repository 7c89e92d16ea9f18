package nvmlsim

import (
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// maxQueued bounds an event set's queue, like the driver's own buffer;
// events beyond it are dropped and counted.
const maxQueued = 1024

// EventSet is a simulated NVML event set. Wait honours its timeout and
// returns ERROR_TIMEOUT when nothing arrived, like the real one.
type EventSet struct {
	srv    *Server
	signal chan struct{} // capacity 1: "the queue may have changed"

	// guarded by srv.mu:
	masks   map[*Device]uint64
	queue   []gonvml.EventData
	freed   bool
	dropped uint64
}

var _ gonvml.EventSet = (*EventSet)(nil)

// push queues an event. Callers hold srv.mu.
func (s *EventSet) push(e gonvml.EventData) {
	if len(s.queue) >= maxQueued {
		s.dropped++
		return
	}
	s.queue = append(s.queue, e)
	s.wake()
}

// wake nudges a waiter. Callers hold srv.mu.
func (s *EventSet) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// Wait implements gonvml.EventSet.
func (s *EventSet) Wait(timeoutMs uint32) (gonvml.EventData, gonvml.Return) {
	var timer <-chan time.Time
	for {
		s.srv.mu.Lock()
		switch {
		case s.freed:
			s.srv.mu.Unlock()
			return gonvml.EventData{}, gonvml.ERROR_INVALID_ARGUMENT
		case s.srv.waitErr != gonvml.SUCCESS:
			ret := s.srv.waitErr
			s.srv.mu.Unlock()
			return gonvml.EventData{}, ret
		case len(s.queue) > 0:
			e := s.queue[0]
			s.queue[0] = gonvml.EventData{}
			s.queue = s.queue[1:]
			s.srv.mu.Unlock()
			return e, gonvml.SUCCESS
		}
		s.srv.mu.Unlock()
		if timeoutMs == 0 {
			return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
		}
		if timer == nil {
			t := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-s.signal:
		case <-timer:
			return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
		}
	}
}

// Free implements gonvml.EventSet.
func (s *EventSet) Free() gonvml.Return {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	if s.freed {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	s.freed = true
	s.queue = nil
	delete(s.srv.sets, s)
	s.wake()
	return gonvml.SUCCESS
}

// Dropped is how many events the set's full queue discarded.
func (s *EventSet) Dropped() uint64 {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	return s.dropped
}

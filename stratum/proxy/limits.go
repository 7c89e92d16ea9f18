package proxy

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// connLimits enforces max_connections and max_connections_per_ip for one
// listener. It is guarded by its own mutex; accept is the only caller of
// admit, connection teardown the only caller of release.
type connLimits struct {
	mu     sync.Mutex
	max    int
	perIP  int // 0 = unlimited
	total  int
	byAddr map[netip.Addr]int
}

func newConnLimits(max, perIP int) *connLimits {
	return &connLimits{max: max, perIP: perIP, byAddr: map[netip.Addr]int{}}
}

// admit reserves a slot for a connection from addr, or says which limit refused it.
func (l *connLimits) admit(addr net.Addr) (ip netip.Addr, refused string) {
	ip = remoteIP(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		return ip, "max_connections"
	}
	if l.perIP > 0 && l.byAddr[ip] >= l.perIP {
		return ip, "max_connections_per_ip"
	}
	l.total++
	l.byAddr[ip]++
	return ip, ""
}

func (l *connLimits) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.byAddr[ip] - 1; n > 0 {
		l.byAddr[ip] = n
	} else {
		delete(l.byAddr, ip)
	}
}

func (l *connLimits) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// tokenBucket allows rate events a second on average, in bursts of at most
// one second's worth (at least one). Its owner's lock guards it; times come
// from the caller, so tests need no clock.
type tokenBucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64) tokenBucket {
	burst := max(1, math.Ceil(rate))
	return tokenBucket{rate: rate, burst: burst, tokens: burst}
}

// take spends one token if there is one at now.
func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() && now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if b.last.IsZero() || now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

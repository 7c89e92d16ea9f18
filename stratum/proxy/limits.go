package proxy

import (
	"net"
	"net/netip"
	"sync"
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

package proxy

import (
	"net"
	"testing"
)

func TestConnLimits(t *testing.T) {
	a := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	b := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 2} // same host, v4-mapped
	c := &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 3}
	l := newConnLimits(3, 2)
	steps := []struct {
		addr    net.Addr
		refused string
	}{
		{a, ""}, {b, ""}, {a, "max_connections_per_ip"}, {c, ""}, {c, "max_connections"},
	}
	for i, s := range steps {
		if _, r := l.admit(s.addr); r != s.refused {
			t.Fatalf("step %d: refused %q, want %q", i, r, s.refused)
		}
	}
	l.release(remoteIP(a))
	if _, r := l.admit(a); r != "" {
		t.Fatalf("after release: refused %q", r)
	}
	if l.count() != 3 {
		t.Fatalf("count = %d", l.count())
	}
	unlimited := newConnLimits(10, 0)
	for i := 0; i < 10; i++ {
		if _, r := unlimited.admit(a); r != "" {
			t.Fatalf("per-IP 0 must mean unlimited; refused at %d: %s", i, r)
		}
	}
}

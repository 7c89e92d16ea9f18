package proxy

import (
	"net"

	"github.com/prometheus/client_golang/prometheus"
)

// readCounter counts the bytes read from a connection (writes are counted by
// its writeQueue, which must hand the raw *net.TCPConn to writev).
type readCounter struct {
	net.Conn
	in prometheus.Counter
}

func (c readCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.in.Add(float64(n))
	}
	return n, err
}

package proxy

import "github.com/prometheus/client_golang/prometheus"

// byteCounter feeds a stratum.Reader's running byte count into a counter
// (writes are counted by the connection's writeQueue). Reading the count
// after each line, rather than wrapping the connection, keeps the miner's
// read path one frame shallower and allocation-free.
type byteCounter struct {
	c    prometheus.Counter
	seen uint64
}

func newByteCounter(c prometheus.Counter) byteCounter { return byteCounter{c: c} }

// update adds what was read since the last call; total is Reader.BytesRead.
func (b *byteCounter) update(total uint64) {
	if total > b.seen {
		b.c.Add(float64(total - b.seen))
		b.seen = total
	}
}

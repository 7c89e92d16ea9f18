package proxy

import (
	"container/heap"
	"container/list"
	"sort"
	"strings"
	"sync"
	"time"
)

// workerTable is the proxy-wide index of worker names behind GET
// /api/v1/workers: how many live connections authorized each name, and the
// share totals of closed connections per name and server, so a worker's
// totals survive reconnects.
//
// Every part is bounded. Live names: by the connections (max_connections)
// times max_workers_per_connection. Retired names: per server, by
// max_retired_workers; past it the least recently retired name is evicted
// and its totals are added to the server's evicted bucket, so the sums of
// the API's views still equal the share ledger.
//
// Guarded by mu. Lock order: a miner's mu, then mu.
type workerTable struct {
	mu      sync.Mutex
	live    map[string]int              // name → live connections that authorized it
	retired map[string][]*retiredWorker // name → its totals on each server (usually one)
	servers map[*server]*retiredServer
}

// retiredWorker is one name's totals on one server's closed connections.
type retiredWorker struct {
	name   string
	srv    *retiredServer
	totals WorkerTotals
	elem   *list.Element // in srv.order
}

// retiredServer is one server's retired names, most recently retired first.
type retiredServer struct {
	srv     *server
	order   list.List // of *retiredWorker
	evicted EvictedTotals
}

// EvictedTotals are the summed totals of worker names evicted from the
// retired-worker table (max_retired_workers), in GET /api/v1/workers.
type EvictedTotals struct {
	Workers uint64 `json:"workers"` // names evicted (a name evicted twice counts twice)
	WorkerTotals
}

func newWorkerTable() *workerTable {
	return &workerTable{live: map[string]int{}, retired: map[string][]*retiredWorker{}, servers: map[*server]*retiredServer{}}
}

// tally is one share outcome for one worker's counters.
type tally struct {
	valid        bool // a valid share: accepted, diff and at are set
	diff         float64
	at           time.Time
	poolAccepted bool
	poolRejected bool
	reject       string // a reject reason, local or the pool's; "" for none
}

func (w *workerStats) apply(t tally) {
	if t.valid {
		w.accepted++
		w.acceptedDiff += t.diff
		w.lastShare = t.at
		w.meter.add(t.diff, t.at)
	}
	if t.poolAccepted {
		w.poolAccepted++
	}
	if t.poolRejected {
		w.poolRejected++
	}
	if t.reject != "" {
		w.reject(t.reject)
	}
}

func (t *WorkerTotals) apply(x tally) {
	if x.valid {
		t.Accepted++
		if t.LastShare == nil || x.at.After(*t.LastShare) {
			at := x.at.UTC()
			t.LastShare = &at
		}
	}
	if x.poolAccepted {
		t.PoolAccepted++
	}
	if x.poolRejected {
		t.PoolRejected++
	}
	if x.reject != "" {
		if t.Rejected == nil {
			t.Rejected = map[string]uint64{}
		}
		t.Rejected[x.reject]++
	}
}

// merge adds o's counters to t.
func (t *WorkerTotals) merge(o *WorkerTotals) {
	t.Accepted += o.Accepted
	t.PoolAccepted += o.PoolAccepted
	t.PoolRejected += o.PoolRejected
	for k, v := range o.Rejected {
		if t.Rejected == nil {
			t.Rejected = map[string]uint64{}
		}
		t.Rejected[k] += v
	}
	if o.LastShare != nil && (t.LastShare == nil || o.LastShare.After(*t.LastShare)) {
		ls := *o.LastShare
		t.LastShare = &ls
	}
}

// addLive records that a live connection authorized name.
func (wt *workerTable) addLive(name string) {
	wt.mu.Lock()
	wt.live[name]++
	wt.mu.Unlock()
}

// retire moves a closed connection's workers from the live index to srv's
// retired totals, evicting past srv's max_retired_workers. It returns how
// many names were evicted and how many remain retired on srv.
func (wt *workerTable) retire(srv *server, workers map[string]*workerStats) (evicted, retired int) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	rs := wt.serverLocked(srv)
	for name, ws := range workers {
		if n := wt.live[name] - 1; n > 0 {
			wt.live[name] = n
		} else {
			delete(wt.live, name)
		}
		rw := wt.findLocked(rs, name)
		if rw == nil {
			rw = &retiredWorker{name: name, srv: rs}
			rw.elem = rs.order.PushFront(rw)
			wt.retired[name] = append(wt.retired[name], rw)
		} else {
			rs.order.MoveToFront(rw.elem)
		}
		rw.totals.add(ws)
	}
	for rs.order.Len() > srv.cfg.MaxRetiredWorkers {
		wt.evictLocked(rs, rs.order.Back().Value.(*retiredWorker))
		evicted++
	}
	return evicted, rs.order.Len()
}

// late applies an outcome that arrived after its connection was retired
// (a pool's verdict, say): to the name's retired totals on srv, or to srv's
// evicted bucket if the name was evicted meanwhile.
func (wt *workerTable) late(srv *server, name string, t tally) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	rs := wt.serverLocked(srv)
	if rw := wt.findLocked(rs, name); rw != nil {
		rw.totals.apply(t)
		return
	}
	rs.evicted.apply(t)
}

func (wt *workerTable) serverLocked(srv *server) *retiredServer {
	rs := wt.servers[srv]
	if rs == nil {
		rs = &retiredServer{srv: srv}
		wt.servers[srv] = rs
	}
	return rs
}

func (wt *workerTable) findLocked(rs *retiredServer, name string) *retiredWorker {
	for _, rw := range wt.retired[name] {
		if rw.srv == rs {
			return rw
		}
	}
	return nil
}

func (wt *workerTable) evictLocked(rs *retiredServer, rw *retiredWorker) {
	rs.order.Remove(rw.elem)
	rs.evicted.Workers++
	rs.evicted.merge(&rw.totals)
	list := wt.retired[rw.name]
	for i, x := range list {
		if x == rw {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(wt.retired, rw.name)
	} else {
		wt.retired[rw.name] = list
	}
}

// page selects up to limit distinct names greater than after, in order,
// with the number of distinct names in the table and whether more names
// follow the page. It holds the lock for one pass over the names and keeps
// only limit of them: a page never costs memory in proportion to the farm.
func (wt *workerTable) page(after string, limit int) (names []string, total int, more bool) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	h := &maxHeap{}
	candidates := 0
	consider := func(name string) {
		total++
		if name <= after {
			return
		}
		candidates++
		switch {
		case h.Len() < limit:
			heap.Push(h, name)
		case name < (*h)[0]:
			(*h)[0] = name
			heap.Fix(h, 0)
		}
	}
	for name := range wt.retired {
		consider(name)
	}
	for name := range wt.live {
		if _, ok := wt.retired[name]; !ok {
			consider(name)
		}
	}
	names = []string(*h)
	sort.Strings(names)
	return names, total, candidates > len(names)
}

// disconnected returns the summed retired totals of each name in views
// (nil where it has none) and the evicted buckets of every server, summed.
func (wt *workerTable) disconnected(views map[string]*WorkerView) EvictedTotals {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	for name, v := range views {
		for _, rw := range wt.retired[name] {
			if v.Disconnected == nil {
				v.Disconnected = &WorkerTotals{}
			}
			v.Disconnected.merge(&rw.totals)
		}
		if v.Disconnected != nil && v.Disconnected.Rejected == nil {
			v.Disconnected.Rejected = map[string]uint64{}
		}
	}
	var ev EvictedTotals
	for _, rs := range wt.servers {
		ev.Workers += rs.evicted.Workers
		ev.merge(&rs.evicted.WorkerTotals)
	}
	return ev
}

// maxHeap of strings: the largest on top, so the smallest limit names stay.
type maxHeap []string

func (h maxHeap) Len() int           { return len(h) }
func (h maxHeap) Less(i, j int) bool { return strings.Compare(h[i], h[j]) > 0 }
func (h maxHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *maxHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *maxHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Package proxy is proxyd's aggregating Stratum V1 farm proxy: miners connect
// to its listeners, it serves them through a few upstream pool sessions by
// splitting each session's extranonce, validates every share locally, sends
// upstream only what meets the pool's difficulty and relays the pool's real
// verdict.
//
// Build it with New from Options (listeners, pools, limits, a logger, a
// Prometheus registerer, an optional liveness func and event journal),
// then Start and Stop it. proxyd's wiring (internal/components) converts
// its config into Options; this package knows nothing of TOML files, the
// daemon or its HTTP server beyond RegisterAPI's routes.
//
// Time comes from Options.Clock (the wall clock when nil): routing, health,
// backoff, verdict timeouts, hashrate windows and a miner's waits read it,
// so tests run minutes of routing in seconds. Socket deadlines stay on the
// wall clock.
//
// # What it does not do
//
//   - It speaks Stratum V1 only, on both sides. The pool side is what a
//     second protocol would replace: miners hold a session (session.go), the
//     interface the V1 upstream implements; a session gives its miners jobs
//     (job.Job, buildable from a protocol-neutral job.Template), takes their
//     shares, and answers each one through the verdictPath it carries.
//   - It never answers a forwarded share itself: a share the pool did not
//     judge gets an error, never a fake success.
//   - It does not build blocks or talk to bitcoind; a block candidate is
//     forwarded to the pool ahead of everything queued, and logged.
//   - It keeps no state across restarts: worker totals and pool health
//     start over.
//
// # The share path
//
// Listener → miner → router → session → pool, and the verdict back the same
// way. The router places a miner on a pool when it subscribes (and moves it
// later); a share goes from the miner to its session without the router.
// Reading these files in this order follows one share:
//
//  1. server.go: the accept loop admits a connection (limits.go) and hands
//     it to the listener's read loop (readloop_linux.go: one epoll instance
//     per listener; a readable miner's lines are read and handled on a
//     shared handler goroutine, handlers.go), or to a reader goroutine of
//     its own where the loop cannot take it (TLS, non-Linux, loop failure).
//  2. miner.go: handleLine runs each line; submit validates the share against the
//     miner's job (stratum/job), counts it and, when it meets the pool's
//     difficulty, forwards it with a pendingSubmit whose reply is the miner.
//  3. upstream.go: forward writes the share to the pool under the pool's
//     user; onVerdict (or expire, or the session's end) takes the pending
//     submit back and calls its reply.
//  4. verdict.go: the miner counts the verdict and writes the answer.
//  5. router.go and routing.go: each listener's router, the goroutine that
//     owns routing (pool health, reject alerts, failover level, weights, the
//     session set), fed by messages and read through the view it publishes;
//     which pool a miner's session is on, and moving miners between them.
//  6. pool.go: a pool's sessions (one kept open always, more as miners
//     need prefixes), reconnect backoff, and placing a miner on a session.
//
// Jobs flow the other way: upstream.onNotify builds one job.Job per notify
// and fans one encoded line out to the session's miners (miner.sendJob).
// Writes to miners go through a bounded writeQueue (queue.go) and never
// block the writer.
//
// # Goroutines and their owners
//
// Every goroutine is joined by Stop, in this order:
//
//   - one router per listener (router.run: routing, see "Who owns what"),
//     one accept loop per listener (server.accept), the janitor
//     (Proxy.janitor: verdict timeouts and idle sessions, then a tick to each
//     router, which it waits for), one keeper per pool (pool.keep) and one
//     reader per pool session (upstream.run): Proxy.wg. They end with
//     Proxy.ctx or their listener.
//   - a miner's moves and reconnect grace periods (miner.relocate, move,
//     moveTo), and the closes of a listener's miners after no_pool_grace:
//     Proxy.tasks; each ends with its miner's ctx.
//   - one read loop and one deadline sweep per listener (readLoop.run,
//     readLoop.sweep): Proxy.wg; they end with Proxy.ctx.
//   - a reader per miner only where the read loop cannot take it
//     (miner.serve): Proxy.serving; it ends when Stop closes the miner's
//     connection.
//   - the line handlers (handlers.run), started by readers: handlers.wg;
//     idle ones end with Proxy.ctx.
//   - a miner's write-queue flusher runs while the queue holds bytes and
//     ends when it is empty or its connection fails: Proxy.flushers, waited
//     for last (Stop has closed every connection by then). A pool session's
//     queue writes inline and has no flusher.
//
// The package's tests fail on any goroutine left after them (goleak in
// TestMain).
//
// # Who owns what
//
//   - A listener's routing: its router goroutine alone (router.go): every
//     pool's health and reject alert, the carrying level and pools, the
//     weighted split's load cache, the session set (which session each miner
//     is on). It learns by messages: a pool that lost its last session
//     (pool.sessionEnded, which waits for the answer), a miner placed on or
//     taken off a session (miner), the janitor's tick on the proxy's Clock.
//     A pool's verdicts (upstream.onVerdict, expire) wait in the pool's
//     verdictInbox (the newest 50, a leaf lock) until the router next runs:
//     a verdict does not wake it. It reads a pool's
//     session facts (pool.observe) and a miner's routing hashrate itself,
//     one lock at a time. Everyone else reads the routeView it publishes
//     (an atomic pointer): pick, isCarrying, noPool, Ready, the API. The
//     share path never talks to it.
//   - A pool's session list, reconnect backoff and last error: pool.mu.
//   - A pool session's connection, jobs (an atomic jobSet for the share
//     path), prefixes, pending submits, passthrough authorizations:
//     upstream.mu; its state is mirrored in an atomic for isActive.
//   - A miner's handshake, session, jobs' difficulties and workers: miner.mu.
//   - A listener's miner set: server.mu.
//
// # Locks
//
// No lock is taken while another type's lock is held, except these, always
// in this order:
//
//	miner.turn → any lock below (a read turn handles the miner's lines)
//	miner.mu → workerTable.mu
//
// Everything else is a leaf: pool.mu, upstream.mu, server.mu,
// workerTable.mu, writeQueue.mu, connLimits.mu, accounting.mu, readLoop.mu
// and readLoop.emu, taskGroup.mu. The router holds no lock while it works,
// and nobody sends it a message holding a lock it takes (pool.mu,
// upstream.mu, miner.mu, server.mu): a send may wait while its queue is
// full. It closes and moves miners on Proxy.tasks, never inline. A miner reads its session's version mask and jobs
// atomically, and asks its session for its extranonce (view) holding no
// lock of its own.
package proxy

// Package hostile is proxyd's hostile-client suite: end-to-end tests that
// build the real proxyd binary, start it on 127.0.0.1 with a temporary
// config and API token, and run every attack of issue 12 against it while a
// few well-behaved miners keep mining through it.
//
// Each attack is bounded in count and time and sends traffic to loopback
// only. While it runs, the suite samples proxyd's resident memory
// (/proc/PID/status VmRSS), its goroutines (go_goroutines from /metrics),
// its log lines per second (counted from its stderr, by each line's own
// timestamp) and the calls it makes upstream (counted at the test pool or
// at a relay in front of it), and asserts each stays within a stated
// bound. Every bound is a named constant that says where it comes from:
// a config default, the README, or the acceptance criteria.
//
// `go test -v ./test/hostile/` prints one table row per attack (the bound
// and the measured peaks); docs/SECURITY.md records those figures.
//
// The suite does not measure speed: no assertion is a wall-clock limit.
// Time only bounds how long an attack runs and how long the suite waits
// for something that must happen.
//
// The suite reads /proc and dials from 127.0.0.2 and up (Linux routes all
// of 127.0.0.0/8 to loopback), so its files build on Linux only; the
// package has no non-test code, and this file only carries the
// documentation.
package hostile

// Package stratumtest is the test-side face of package stratumsim, in the
// spirit of net/http/httptest: NewPool, NewMiner and NewFleet start a
// simulated pool, miner or fleet for a test, fail the test if that fails and
// close it in t.Cleanup.
//
// Everything else (the Pool, Miner and Fleet types, their options, events,
// share kinds, verdicts, error codes and errors) is stratumsim's, under the
// same names: the types are aliases, so a value from one package is a value
// of the other. See package stratumsim for what the simulator does.
//
// This package imports testing and is for tests only. Code that ships in a
// binary (proxyd demo, proxyload) uses stratumsim directly; a test in
// cmd/proxyd fails if stratumtest or testing is linked into proxyd.
package stratumtest

// Package events is proxyd's journal of decisions: every routing switch,
// GPU transition and contract decision is recorded with when, what, from,
// to and why, so an operator can ask the daemon to explain itself
// (GET /api/v1/events).
//
// A Log is either in memory (New: a ring of the last N events, lost when
// the process ends) or durable (Open: a bounded ring on disk that a restart
// reads back, so the "why" of what happened before a crash survives it).
// Every entry carries the boot id of the process that wrote it, and
// sequence numbers continue across boots, so "after=SEQ" stays meaningful.
//
// The durable journal is two segment files in one directory, each at most
// half the configured size; when the active one is full the other is
// truncated and becomes active, so between half and all of the configured
// size of the newest events is kept. Records are length- and CRC-framed and
// written with one pwrite each, without fsync: a kill -9 loses nothing the
// kernel accepted, a power loss may lose the last seconds, and a torn or
// garbled tail is detected on open and cut off, never served and never
// built upon.
//
// It does not: fsync on the hot path, replicate, compress, or keep more
// than its configured size (the logs keep the full history); nor may two
// processes share one journal directory (the second Open fails).
package events

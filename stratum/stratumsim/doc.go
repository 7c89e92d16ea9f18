// Package stratumsim simulates a Stratum V1 pool, ASIC miners and fleets of
// them, by default on 127.0.0.1, for the demo (proxyd demo), the load tool
// (proxyload) and end-to-end tests. It does not import testing, so a binary
// that links it stays free of test code; package stratumtest wraps it for
// tests (NewPool, NewMiner, NewFleet, closed in t.Cleanup). Constructors
// return errors and take options; nothing here fails a test.
//
// # What it is not
//
// It is not a pool and not for production mining: the Pool pays nobody,
// keeps its sessions, jobs and shares in memory only, and builds jobs on an
// invented block unless given a JobTemplate; its authorization is whatever
// PoolOptions.Authorize says (everyone, by default). The Miners hash on the
// CPU at test difficulties. Its bounds (MaxLineBytes, MaxQueuedLines,
// KeepShares) protect a demo or test run, not a service exposed to the
// internet. It talks to no node; stratumtest/regtest feeds it templates from
// a btcd regtest node, for tests.
//
// # Independence
//
// The package imports nothing from the proxy's own stratum packages: the
// Pool validates shares with btcd (wire.BlockHeader serialization,
// chainhash, blockchain.CompactToBig), the Miners build headers and hash
// with their own code (crypto/sha256 with a midstate), so a share the Pool
// accepts proves that the miner's work, the proxy's extranonce split and
// the pool's view of the block agree byte for byte.
//
// # Pool
//
// StartPool (stratumtest.NewPool in a test) listens on a loopback port and
// speaks Stratum V1 as a real pool: mining.configure (version rolling: grants its
// mask ∧ the requested one, answers only the requested extensions),
// subscribe, authorize, extranonce.subscribe, suggest_difficulty, ping,
// submit with 5 or 6 params; unknown methods get error 20. After the first
// successful authorize of a subscribed session it sends set_difficulty and
// the current job (clean). Jobs have a real-shaped coinbase, a merkle
// branch, a word-swapped prevhash, version 0x20000000 and a mainnet nbits.
// Each share is checked: job known and not stale (21), extranonce2 length,
// ntime range and version bits within the mask (20), difficulty in force
// when the job was sent to that session (23), duplicates (22), worker
// authorized on the connection (24), subscribed (25). Knobs (NewJob,
// SetDifficulty, SetExtranonce, SetVersionMask, RejectNext, RejectFunc,
// DelayResponses, SuppressVerdicts, SendReconnect, ShowMessage, DropAll,
// Stop/Start/Restart on the same port) drive failure scenarios, and
// Stats, Sessions, Shares, Jobs and WaitFor observe the result.
//
// With a JobTemplate (PoolOptions.Template, then SetTemplate for each new
// block) the jobs are built on a real block from outside, such as a node's
// getblocktemplate: its prevhash, version, nbits, height, coinbase outputs
// and merkle branch. Each share on such a job records the coinbase the pool
// hashed and the template, so the provider can assemble and submit the
// block; a share that meets the network target is accepted even below the
// session's difficulty, as a pool takes any block. Package
// stratumtest/regtest drives a Pool this way from a btcd regtest node.
//
// # Miners
//
// DialMiner (stratumtest.NewMiner in a test) connects one simulated ASIC
// with a firmware Style (Antminer, Whatsminer, Braiins OS, Bitaxe,
// NiceHash, Plain, Idle) that fixes the handshake order and quirks. A miner really hashes: Submit
// finds a share at the miner's difficulty for the newest job (rolling
// version bits within the granted mask), or a deliberately bad one
// (ShareKind, with the code it should get), in the calling goroutine. Every
// message received and every verdict is recorded with its arrival time.
// Misbehaviours (garbage, oversized lines, floods, a stalled reader, RST)
// test a server's defences.
//
// A share at difficulty d takes d·2^32 hashes on average, about 150 ns
// each on one core: difficulty 1e-6 is ~4,300 hashes (<1 ms), 1e-5 ~43,000
// (~7 ms), 1e-4 ~430,000 (~65 ms). Keep test difficulties at 1e-4 or below.
//
// # Fleets
//
// StartFleet (stratumtest.NewFleet in a test) connects many miners that
// share one parsed notify cache, one scheduler goroutine and a few hashing
// workers: the only per-miner goroutine is its connection reader. SharesPerMinute submits at
// a Poisson rate, BadFraction mixes in labelled bad shares, SubmitEach
// submits on demand. MinerFunc varies options per miner (a LocalAddr each,
// to spread many connections over source addresses) and OnDialed reports
// each dial, so a load tool can time every handshake.
//
// # Concurrency
//
// Every exported method is safe for concurrent use. Callbacks (OnEvent,
// OnVerdict, OnShare, RejectFunc, Authorize) run on the connection's
// goroutine; Authorize runs under the Pool's lock and must not call the
// Pool. Close on a Pool, Miner or Fleet waits for all their goroutines.
package stratumsim

// Package regtest runs a real btcd node in regression-test mode for
// end-to-end tests, and drives a stratumsim.Pool from it, so that blocks
// mined through a proxy are judged by a real node.
//
// StartNode runs btcd (found by FindBtcd on PATH or in $(go env
// GOPATH)/bin) on a free 127.0.0.1 port with a temporary directory, RPC
// without TLS and no P2P listener; btcd's regtest starts a fresh chain on
// every start. Client speaks the node's JSON-RPC (getblocktemplate,
// submitblock, generate, ...) with btcd's own btcjson types.
//
// StartPool takes templates with getblocktemplate (segwit rule,
// coinbasevalue capability) and gives them to a stratumsim.Pool as
// JobTemplates: a coinbase paying the test key's P2WPKH address with a
// witness commitment computed here (and checked against the node's), and
// the merkle branch over the template's txids. Every accepted share that
// meets the network target becomes a block: the pool's header and coinbase,
// the coinbase witness (the 32-byte reserved value, which btcd's
// submitblock does not add the way bitcoind does) and the template's
// transactions, submitted with submitblock; then the mempool is refilled
// and the next template goes out as a clean job. CheckChain asks the node
// whether every block is on the main chain with a valid witness commitment.
//
// TxSource, wallet-less, keeps legacy (P2PKH), segwit (P2WPKH) and mixed
// transactions in the mempool, built and signed here with btcd's txscript
// from the test key's matured coinbases (the node's generate mines the
// first 100+ blocks), so templates carry a few dozen real transactions.
//
// What it does not do: it is no pool for real money (one public key, no
// payouts, no share accounting beyond the stratumsim.Pool's), it does not
// run bitcoind, and it talks to nothing but the node it started on
// 127.0.0.1. Need decides what a test does without btcd: skip on a
// developer's machine, fail when CI is set.
package regtest

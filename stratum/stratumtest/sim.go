package stratumtest

import (
	"context"
	"math/big"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// The simulator lives in stratumsim, which the demo and the load tool link
// without testing. These names keep every test written against stratumtest
// compiling unchanged: the types are aliases (the same types, methods
// included), the values are stratumsim's own (errors.Is matches either).

// Pool side.
type (
	Pool          = stratumsim.Pool
	PoolOptions   = stratumsim.PoolOptions
	PoolStats     = stratumsim.PoolStats
	UserStats     = stratumsim.UserStats
	SessionInfo   = stratumsim.SessionInfo
	Share         = stratumsim.Share
	JobInfo       = stratumsim.JobInfo
	JobTemplate   = stratumsim.JobTemplate
	RPCError      = stratumsim.RPCError
	HandshakeInfo = stratumsim.HandshakeInfo
)

// Miner and fleet side.
type (
	Miner         = stratumsim.Miner
	MinerOptions  = stratumsim.MinerOptions
	MinerStats    = stratumsim.MinerStats
	Style         = stratumsim.Style
	Event         = stratumsim.Event
	EventKind     = stratumsim.EventKind
	JobView       = stratumsim.JobView
	ShareKind     = stratumsim.ShareKind
	Verdict       = stratumsim.Verdict
	Submission    = stratumsim.Submission
	SubmitRequest = stratumsim.SubmitRequest
	SubmitResult  = stratumsim.SubmitResult
	Fleet         = stratumsim.Fleet
	FleetOptions  = stratumsim.FleetOptions
	FleetStats    = stratumsim.FleetStats
)

// Stratum error codes the Pool answers with.
const (
	CodeOther         = stratumsim.CodeOther
	CodeJobNotFound   = stratumsim.CodeJobNotFound
	CodeDuplicate     = stratumsim.CodeDuplicate
	CodeLowDifficulty = stratumsim.CodeLowDifficulty
	CodeUnauthorized  = stratumsim.CodeUnauthorized
	CodeNotSubscribed = stratumsim.CodeNotSubscribed
)

// Defaults of the simulated block and share difficulty.
const (
	DefaultVersionMask = stratumsim.DefaultVersionMask
	DefaultJobVersion  = stratumsim.DefaultJobVersion
	DefaultNBits       = stratumsim.DefaultNBits
	EasyNBits          = stratumsim.EasyNBits
	DefaultDifficulty  = stratumsim.DefaultDifficulty
)

// Miner events.
const (
	EventConnected      = stratumsim.EventConnected
	EventDisconnected   = stratumsim.EventDisconnected
	EventSetDifficulty  = stratumsim.EventSetDifficulty
	EventNotify         = stratumsim.EventNotify
	EventSetExtranonce  = stratumsim.EventSetExtranonce
	EventSetVersionMask = stratumsim.EventSetVersionMask
	EventReconnect      = stratumsim.EventReconnect
	EventShowMessage    = stratumsim.EventShowMessage
	EventOther          = stratumsim.EventOther
)

// Share kinds.
const (
	ShareGood               = stratumsim.ShareGood
	ShareLowDifficulty      = stratumsim.ShareLowDifficulty
	ShareStale              = stratumsim.ShareStale
	ShareDuplicate          = stratumsim.ShareDuplicate
	ShareBadVersionBits     = stratumsim.ShareBadVersionBits
	ShareUnauthorizedWorker = stratumsim.ShareUnauthorizedWorker
	ShareBadExtranonce2     = stratumsim.ShareBadExtranonce2
)

// Firmware styles.
const (
	StylePlain      = stratumsim.StylePlain
	StyleAntminer   = stratumsim.StyleAntminer
	StyleWhatsminer = stratumsim.StyleWhatsminer
	StyleBraiinsOS  = stratumsim.StyleBraiinsOS
	StyleBitaxe     = stratumsim.StyleBitaxe
	StyleNiceHash   = stratumsim.StyleNiceHash
	StyleIdle       = stratumsim.StyleIdle
)

// Verdicts.
const (
	VerdictPending  = stratumsim.VerdictPending
	VerdictAccepted = stratumsim.VerdictAccepted
	VerdictRejected = stratumsim.VerdictRejected
	VerdictLost     = stratumsim.VerdictLost
)

// Errors (the same values as stratumsim's).
var (
	ErrPoolClosed           = stratumsim.ErrPoolClosed
	ErrMinerClosed          = stratumsim.ErrMinerClosed
	ErrNotConnected         = stratumsim.ErrNotConnected
	ErrNotReady             = stratumsim.ErrNotReady
	ErrNoJob                = stratumsim.ErrNoJob
	ErrUnknownJob           = stratumsim.ErrUnknownJob
	ErrSearchExhausted      = stratumsim.ErrSearchExhausted
	ErrAuthorizeRejected    = stratumsim.ErrAuthorizeRejected
	ErrSubscribeFailed      = stratumsim.ErrSubscribeFailed
	ErrUnrequestedExtension = stratumsim.ErrUnrequestedExtension
	ErrConnectionLost       = stratumsim.ErrConnectionLost
)

// StartPool is stratumsim.StartPool.
func StartPool(opts PoolOptions) (*Pool, error) { return stratumsim.StartPool(opts) }

// DialMiner is stratumsim.DialMiner.
func DialMiner(ctx context.Context, addr string, opts MinerOptions) (*Miner, error) {
	return stratumsim.DialMiner(ctx, addr, opts)
}

// StartFleet is stratumsim.StartFleet.
func StartFleet(ctx context.Context, addr string, opts FleetOptions) (*Fleet, error) {
	return stratumsim.StartFleet(ctx, addr, opts)
}

// DifficultyTarget is stratumsim.DifficultyTarget.
func DifficultyTarget(d float64) *big.Int { return stratumsim.DifficultyTarget(d) }

// HashDifficulty is stratumsim.HashDifficulty.
func HashDifficulty(h chainhash.Hash) float64 { return stratumsim.HashDifficulty(h) }

// BadKinds is stratumsim.BadKinds.
func BadKinds() []ShareKind { return stratumsim.BadKinds() }

// AllStyles is stratumsim.AllStyles.
func AllStyles() []Style { return stratumsim.AllStyles() }

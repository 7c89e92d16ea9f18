package stratumsim

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// JobTemplate is a block to mine that comes from outside the Pool, such as
// a node's getblocktemplate answer (package stratumtest/regtest): jobs built
// on it carry its previous block, version, nbits, height, coinbase outputs
// and merkle branch instead of invented ones, so a share that meets the
// network target is a real block. The Pool still builds the coinbase input
// (BIP34 height push, extranonce region, pool tag). A JobTemplate must not
// be changed once handed to the Pool: shares refer to it.
type JobTemplate struct {
	PrevHash chainhash.Hash // previous block hash (internal byte order)
	Height   uint32         // height of the block being mined
	Version  uint32         // block version before any version rolling
	NBits    uint32         // compact network target
	// NTime is the earliest ntime for jobs on the template (the node's
	// curtime); a job created later takes the current time instead.
	NTime uint32
	// CoinbaseOutputs are the coinbase's outputs in order, typically the
	// payout and the witness commitment. 1 to 16 outputs.
	CoinbaseOutputs []*wire.TxOut
	// Branch is the coinbase's merkle branch over the block's other
	// transactions' txids, in folding order (empty for a coinbase-only
	// block).
	Branch []chainhash.Hash
	// Source is the provider's own data (its transactions, say), handed
	// back untouched with every share on a job built from this template
	// (Share.Template), so the provider can assemble the block.
	Source any
}

// templateState is a validated JobTemplate with its coinbase outputs and
// branch in the forms jobs use. Immutable.
type templateState struct {
	t       *JobTemplate
	outputs []byte // output count and serialized outputs
	branch  [][32]byte
}

// newTemplateState checks t and precomputes what every job on it needs.
func newTemplateState(t *JobTemplate) (*templateState, error) {
	if t == nil {
		return nil, errors.New("stratumsim: nil job template")
	}
	if n := len(t.CoinbaseOutputs); n < 1 || n > 16 {
		return nil, fmt.Errorf("stratumsim: job template has %d coinbase outputs, want 1..16", n)
	}
	var buf bytes.Buffer
	if err := wire.WriteVarInt(&buf, 0, uint64(len(t.CoinbaseOutputs))); err != nil {
		return nil, fmt.Errorf("stratumsim: job template outputs: %w", err)
	}
	for i, o := range t.CoinbaseOutputs {
		if o == nil {
			return nil, fmt.Errorf("stratumsim: job template coinbase output %d is nil", i)
		}
		if err := wire.WriteTxOut(&buf, 0, 0, o); err != nil {
			return nil, fmt.Errorf("stratumsim: job template coinbase output %d: %w", i, err)
		}
	}
	st := &templateState{t: t, outputs: buf.Bytes(), branch: make([][32]byte, len(t.Branch))}
	for i, h := range t.Branch {
		st.branch[i] = h
	}
	return st, nil
}

// SetTemplate makes t the template of every job from now on (until the next
// SetTemplate) and sends a job built on it to every session that has work
// flowing. clean=true makes every earlier job stale, as a new block does.
// It returns the new job's record.
func (p *Pool) SetTemplate(t *JobTemplate, clean bool) (JobInfo, error) {
	st, err := newTemplateState(t)
	if err != nil {
		return JobInfo{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tmpl = st
	j := p.createJobLocked(clean)
	p.broadcastJobLocked(j)
	p.notifyLocked()
	return j.infoLocked(), nil
}

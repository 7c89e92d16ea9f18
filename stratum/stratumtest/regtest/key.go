package regtest

import (
	"crypto/sha256"
	"fmt"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// keySeed derives the test key. Anyone can spend what it holds: regtest
// only.
const keySeed = "hashgate proxyd regtest test key (regtest only, public)"

// Key is the test key: the pool's coinbases and the node's generated blocks
// pay its segwit (P2WPKH) address, and the transaction source moves coins
// between that and its legacy (P2PKH) address. It is immutable.
type Key struct {
	priv         *btcec.PrivateKey
	Legacy       address.Address // P2PKH, "m..." or "n..."
	Segwit       address.Address // P2WPKH, "bcrt1q..."
	LegacyScript []byte          // P2PKH output script
	SegwitScript []byte          // P2WPKH output script
}

// TestKey returns the fixed regtest key (the same on every call).
func TestKey() *Key {
	seed := sha256.Sum256([]byte(keySeed))
	priv, pub := btcec.PrivKeyFromBytes(seed[:])
	pkh := address.Hash160(pub.SerializeCompressed())
	params := &chaincfg.RegressionNetParams
	legacy, err := address.NewAddressPubKeyHash(pkh, params)
	if err != nil {
		panic(fmt.Sprintf("regtest: legacy address: %v", err)) // a 20-byte hash always makes one
	}
	segwit, err := address.NewAddressWitnessPubKeyHash(pkh, params)
	if err != nil {
		panic(fmt.Sprintf("regtest: segwit address: %v", err))
	}
	k := &Key{priv: priv, Legacy: legacy, Segwit: segwit}
	if k.LegacyScript, err = txscript.PayToAddrScript(legacy); err != nil {
		panic(fmt.Sprintf("regtest: legacy script: %v", err))
	}
	if k.SegwitScript, err = txscript.PayToAddrScript(segwit); err != nil {
		panic(fmt.Sprintf("regtest: segwit script: %v", err))
	}
	return k
}

// sign fills in the signature script (P2PKH inputs) or witness (P2WPKH
// inputs) of every input of tx; prev holds the outputs they spend, in
// input order, all paying this key.
func (k *Key) sign(tx *wire.MsgTx, prev []*wire.TxOut) error {
	if len(prev) != len(tx.TxIn) {
		return fmt.Errorf("regtest: sign: %d inputs, %d previous outputs", len(tx.TxIn), len(prev))
	}
	fetch := txscript.NewMultiPrevOutFetcher(nil)
	for i, in := range tx.TxIn {
		fetch.AddPrevOut(in.PreviousOutPoint, prev[i])
	}
	hashes := txscript.NewTxSigHashes(tx, fetch)
	for i, p := range prev {
		switch {
		case txscript.IsPayToWitnessPubKeyHash(p.PkScript):
			w, err := txscript.WitnessSignature(tx, hashes, i, p.Value, p.PkScript, txscript.SigHashAll, k.priv, true)
			if err != nil {
				return fmt.Errorf("regtest: sign input %d (P2WPKH): %w", i, err)
			}
			tx.TxIn[i].Witness = w
		case txscript.IsPayToPubKeyHash(p.PkScript):
			s, err := txscript.SignatureScript(tx, i, p.PkScript, txscript.SigHashAll, k.priv, true)
			if err != nil {
				return fmt.Errorf("regtest: sign input %d (P2PKH): %w", i, err)
			}
			tx.TxIn[i].SignatureScript = s
		default:
			return fmt.Errorf("regtest: sign input %d: script %x is not the test key's", i, p.PkScript)
		}
	}
	return nil
}

package regtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// maxResponseBytes bounds one RPC answer read from the node (a regtest
// block or template is far smaller; a bigger answer is an error).
const maxResponseBytes = 32 << 20

// RPCError is an error the node answered with.
type RPCError struct {
	Method  string
	Code    int
	Message string
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("btcd %s: error %d: %s", e.Method, e.Code, e.Message)
}

// Client calls a btcd node's JSON-RPC interface over HTTP (btcd with
// --notls). It is safe for concurrent use.
type Client struct {
	url, user, pass string
	hc              *http.Client
	id              atomic.Uint64
}

// NewClient returns a client for the node at addr ("127.0.0.1:port").
func NewClient(addr, user, pass string) *Client {
	return &Client{url: "http://" + addr + "/", user: user, pass: pass, hc: &http.Client{Timeout: 60 * time.Second}}
}

// Call sends one request and decodes its result into result (which may be
// nil to discard it). A node error is an *RPCError.
func (c *Client) Call(ctx context.Context, method string, params []any, result any) error {
	if params == nil {
		params = []any{}
	}
	body, err := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		ID      uint64 `json:"id"`
		Method  string `json:"method"`
		Params  []any  `json:"params"`
	}{"1.0", c.id.Add(1), method, params})
	if err != nil {
		return fmt.Errorf("btcd %s: encode request: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("btcd %s: %w", method, err)
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("btcd %s: %w", method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("btcd %s: read answer: %w", method, err)
	}
	if len(raw) > maxResponseBytes {
		return fmt.Errorf("btcd %s: answer over %d bytes", method, maxResponseBytes)
	}
	var out struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		// btcd answers authentication failures with a bare HTTP status.
		return fmt.Errorf("btcd %s: HTTP %s: %q: %w", method, resp.Status, truncate(raw, 200), err)
	}
	if out.Error != nil {
		return &RPCError{Method: method, Code: out.Error.Code, Message: out.Error.Message}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("btcd %s: HTTP %s: %q", method, resp.Status, truncate(raw, 200))
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(out.Result, result); err != nil {
		return fmt.Errorf("btcd %s: decode result %q: %w", method, truncate(out.Result, 200), err)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// BlockCount returns the height of the best chain's tip.
func (c *Client) BlockCount(ctx context.Context) (int64, error) {
	var n int64
	err := c.Call(ctx, "getblockcount", nil, &n)
	return n, err
}

// BestBlockHash returns the hash of the best chain's tip.
func (c *Client) BestBlockHash(ctx context.Context) (chainhash.Hash, error) {
	return c.hashResult(ctx, "getbestblockhash", nil)
}

// BlockHash returns the hash of the main-chain block at height.
func (c *Client) BlockHash(ctx context.Context, height int64) (chainhash.Hash, error) {
	return c.hashResult(ctx, "getblockhash", []any{height})
}

func (c *Client) hashResult(ctx context.Context, method string, params []any) (chainhash.Hash, error) {
	var s string
	if err := c.Call(ctx, method, params, &s); err != nil {
		return chainhash.Hash{}, err
	}
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("btcd %s: hash %q: %w", method, s, err)
	}
	return *h, nil
}

// Block returns a block by hash, decoded from the node's raw serialization
// (witnesses included).
func (c *Client) Block(ctx context.Context, hash chainhash.Hash) (*wire.MsgBlock, error) {
	var s string
	if err := c.Call(ctx, "getblock", []any{hash.String(), 0}, &s); err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("btcd getblock %s: hex: %w", hash, err)
	}
	var b wire.MsgBlock
	if err := b.Deserialize(bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("btcd getblock %s: decode: %w", hash, err)
	}
	return &b, nil
}

// BlockTemplate asks for a block template with the segwit rule and the
// coinbasevalue capability (the caller builds the coinbase).
func (c *Client) BlockTemplate(ctx context.Context) (*btcjson.GetBlockTemplateResult, error) {
	req := btcjson.TemplateRequest{Mode: "template", Rules: []string{"segwit"}, Capabilities: []string{"coinbasevalue"}}
	var r btcjson.GetBlockTemplateResult
	if err := c.Call(ctx, "getblocktemplate", []any{req}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// SubmitBlock submits a block (serialized with witnesses). It returns ""
// when the node took it, else the node's reason ("rejected: ...",
// "duplicate", ...). Taking it does not mean it is on the main chain.
func (c *Client) SubmitBlock(ctx context.Context, b *wire.MsgBlock) (string, error) {
	var buf bytes.Buffer
	if err := b.Serialize(&buf); err != nil {
		return "", fmt.Errorf("serialize block: %w", err)
	}
	var reason *string
	if err := c.Call(ctx, "submitblock", []any{hex.EncodeToString(buf.Bytes())}, &reason); err != nil {
		return "", err
	}
	if reason == nil {
		return "", nil
	}
	if *reason == "" {
		return "", errors.New("btcd submitblock: empty rejection reason")
	}
	return *reason, nil
}

// Generate mines n blocks with the node's own CPU miner (regtest only; the
// coinbases pay the node's --miningaddr) and returns their hashes.
func (c *Client) Generate(ctx context.Context, n int) ([]chainhash.Hash, error) {
	var ss []string
	if err := c.Call(ctx, "generate", []any{n}, &ss); err != nil {
		return nil, err
	}
	out := make([]chainhash.Hash, len(ss))
	for i, s := range ss {
		h, err := chainhash.NewHashFromStr(s)
		if err != nil {
			return nil, fmt.Errorf("btcd generate: hash %q: %w", s, err)
		}
		out[i] = *h
	}
	return out, nil
}

// SendRawTransaction submits a signed transaction to the mempool.
func (c *Client) SendRawTransaction(ctx context.Context, tx *wire.MsgTx) (chainhash.Hash, error) {
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		return chainhash.Hash{}, fmt.Errorf("serialize transaction: %w", err)
	}
	return c.hashResult(ctx, "sendrawtransaction", []any{hex.EncodeToString(buf.Bytes())})
}

// SoftForkStatus returns a BIP9 deployment's status from
// getblockchaininfo ("defined", "started", "lockedin", "active",
// "failed"), or "" when the node does not list it.
func (c *Client) SoftForkStatus(ctx context.Context, name string) (string, error) {
	var r struct {
		Bip9 map[string]struct {
			Status string `json:"status"`
		} `json:"bip9_softforks"`
	}
	if err := c.Call(ctx, "getblockchaininfo", nil, &r); err != nil {
		return "", err
	}
	return r.Bip9[name].Status, nil
}

// MempoolSize returns how many transactions the mempool holds.
func (c *Client) MempoolSize(ctx context.Context) (int, error) {
	var ids []string
	if err := c.Call(ctx, "getrawmempool", nil, &ids); err != nil {
		return 0, err
	}
	return len(ids), nil
}

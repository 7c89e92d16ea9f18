package regtest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire/v2"
)

// TestClient: requests carry basic auth and JSON-RPC 1.0; answers, node
// errors, HTTP failures and garbage each come back as what they are.
func TestClient(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		call   func(c *Client) (any, error)
		want   any
		errHas string
		rpcErr int // expected RPCError code (0: not an RPCError)
	}{
		{"block count", 200, `{"result":431,"error":null,"id":1}`,
			func(c *Client) (any, error) { return c.BlockCount(context.Background()) }, int64(431), "", 0},
		{"node error", 200, `{"result":null,"error":{"code":-8,"message":"Block number out of range"},"id":1}`,
			func(c *Client) (any, error) { return c.BlockHash(context.Background(), 99) }, nil, "Block number out of range", -8},
		{"bad credentials", 401, "401 Unauthorized.\n",
			func(c *Client) (any, error) { return c.BlockCount(context.Background()) }, nil, "401", 0},
		{"HTTP error with JSON", 500, `{"result":1}`,
			func(c *Client) (any, error) { return c.BlockCount(context.Background()) }, nil, "500", 0},
		{"wrong result type", 200, `{"result":"many","error":null}`,
			func(c *Client) (any, error) { return c.BlockCount(context.Background()) }, nil, "decode result", 0},
		{"bad hash", 200, `{"result":"xyz","error":null}`,
			func(c *Client) (any, error) { return c.BestBlockHash(context.Background()) }, nil, "hash", 0},
		{"submitblock taken", 200, `{"result":null,"error":null}`,
			func(c *Client) (any, error) { return c.SubmitBlock(context.Background(), &wire.MsgBlock{}) }, "", "", 0},
		{"submitblock refused", 200, `{"result":"rejected: bad-txnmrklroot","error":null}`,
			func(c *Client) (any, error) { return c.SubmitBlock(context.Background(), &wire.MsgBlock{}) }, "rejected: bad-txnmrklroot", "", 0},
		{"segwit status", 200, `{"result":{"bip9_softforks":{"segwit":{"status":"active"}}},"error":null}`,
			func(c *Client) (any, error) { return c.SoftForkStatus(context.Background(), "segwit") }, "active", "", 0},
		{"mempool", 200, `{"result":["aa","bb"],"error":null}`,
			func(c *Client) (any, error) { return c.MempoolSize(context.Background()) }, 2, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got struct {
				JSONRPC string `json:"jsonrpc"`
				Method  string `json:"method"`
				Params  []any  `json:"params"`
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "pass" {
					t.Errorf("basic auth %q %q %v", u, p, ok)
				}
				b, _ := io.ReadAll(r.Body)
				if err := json.Unmarshal(b, &got); err != nil || got.JSONRPC != "1.0" || got.Params == nil {
					t.Errorf("request %s: %v", b, err)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c := NewClient(strings.TrimPrefix(srv.URL, "http://"), "user", "pass")
			v, err := tc.call(c)
			if tc.errHas == "" {
				if err != nil || v != tc.want {
					t.Fatalf("got %#v, %v; want %#v", v, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			}
			var re *RPCError
			if isRPC := errors.As(err, &re); isRPC != (tc.rpcErr != 0) || (isRPC && re.Code != tc.rpcErr) {
				t.Fatalf("error %#v: RPCError code %d expected", err, tc.rpcErr)
			}
		})
	}
}

// TestClientContext: a call gives up when its context ends, whatever the
// node does.
func TestClientContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewClient(strings.TrimPrefix(srv.URL, "http://"), "u", "p").BlockCount(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the context's deadline", err)
	}
}

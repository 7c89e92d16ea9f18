package share_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/share"
)

// The requests under testdata describe real mainnet blocks as a pool and a
// miner would have exchanged them (built by the job package's tests from
// the blocks in stratum/job/testdata/blocks).
var blocks = map[string]struct {
	hash, merkleRoot string
}{
	"block-277647.json": {"0000000000000000054a714e580b16c583701712ab91060e92dbde6eb1e052a8", "36ac31298eb05c23be1f775d635104705e4560c6532b95c158023c6dc9af06c3"},
	"block-540619.json": {"00000000000000000021868c2cefc52a480d173c849412fe81c4e5ab806f94ab", "bc337232e053ba46ae12f21c640d16190cbba10f914759ef54a7f07eda58be70"},
	"block-881423.json": {"0000000000000000000269d52c24ea451225613aab095d90d771d4e29aa96cdd", "2d62cfdf6b3470f7c870e8a4be8fbf58dfbbeee2ccb03e6d01b5b8f1353af676"},
}

func load(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func verify(t *testing.T, req map[string]any, opts share.Options) (share.Report, error) {
	t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := share.Read(bytes.NewReader(data))
	if err != nil {
		return share.Report{}, err
	}
	return share.Verify(r, opts)
}

func TestVerifyRealBlocks(t *testing.T) {
	for name, want := range blocks {
		t.Run(name, func(t *testing.T) {
			rep, err := verify(t, load(t, name), share.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Valid || rep.Reason != "" || !rep.BlockCandidate || rep.BlockHash != want.hash || rep.MerkleRoot != want.merkleRoot {
				t.Fatalf("%+v", rep)
			}
			if len(rep.Header) != 160 || rep.ShareDifficulty < 1e11 {
				t.Fatalf("header %q difficulty %g", rep.Header, rep.ShareDifficulty)
			}
		})
	}
}

func submitParam(req map[string]any, i int, v any) {
	s := append([]any(nil), req["submit"].([]any)...)
	for len(s) <= i {
		s = append(s, nil)
	}
	s[i] = v
	req["submit"] = s
}

func TestVerifyRejections(t *testing.T) {
	tests := []struct {
		name      string
		block     string
		edit      func(req map[string]any)
		opts      share.Options
		reason    string
		diagnosed bool // header and hash still reported
		// stillBlock: the header is the real block's; only the verdict
		// differs (the miner's bits were outside the mask, the job id or
		// ntime window is wrong). The report shows the block so the
		// operator sees what was lost.
		stillBlock bool
	}{
		{"wrong nonce", "block-881423.json", func(r map[string]any) { submitParam(r, 4, "ff05fb03") }, share.Options{}, "low_difficulty", true, false},
		{"wrong extranonce2", "block-540619.json", func(r map[string]any) { submitParam(r, 2, "00000000") }, share.Options{}, "low_difficulty", true, false},
		{"wrong extranonce1", "block-277647.json", func(r map[string]any) { r["extranonce1"] = "00000000" }, share.Options{}, "low_difficulty", true, false},
		{"bits outside the mask", "block-881423.json", func(r map[string]any) { r["version_mask"] = "00ffe000" }, share.Options{}, "version_bits_outside_mask", true, true},
		{"bits without a mask", "block-881423.json", func(r map[string]any) { r["version_mask"] = nil }, share.Options{}, "version_bits_outside_mask", true, true},
		{"rolled bits dropped", "block-881423.json", func(r map[string]any) { r["submit"] = r["submit"].([]any)[:5] }, share.Options{}, "low_difficulty", true, false},
		{"ntime before the job", "block-540619.json", func(r map[string]any) { submitParam(r, 3, "00000001") }, share.Options{}, "bad_ntime", true, false},
		{"ntime past the window", "block-540619.json", nil, share.Options{NtimeWindow: 10 * time.Second}, "bad_ntime", true, true},
		{"other job", "block-277647.json", func(r map[string]any) { submitParam(r, 1, "other") }, share.Options{}, "stale", true, true},
		{"other job and bits outside the mask", "block-881423.json", func(r map[string]any) {
			submitParam(r, 1, "other")
			r["version_mask"] = "00ffe000"
		}, share.Options{}, "stale", true, true},
		{"malformed nonce", "block-277647.json", func(r map[string]any) { submitParam(r, 4, "xyz") }, share.Options{}, "malformed", false, false},
		{"seven params", "block-277647.json", func(r map[string]any) { submitParam(r, 6, "00") }, share.Options{}, "malformed", false, false},
		{"extranonce2 too long", "block-277647.json", func(r map[string]any) { submitParam(r, 2, strings.Repeat("00", 33)) }, share.Options{}, "malformed", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := load(t, tt.block)
			if tt.edit != nil {
				tt.edit(req)
			}
			rep, err := verify(t, req, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Valid || rep.Reason != tt.reason || rep.Detail == "" {
				t.Fatalf("%+v, want rejection %q with a detail", rep, tt.reason)
			}
			if isBlock := rep.BlockHash == blocks[tt.block].hash; isBlock != tt.stillBlock || rep.BlockCandidate != tt.stillBlock {
				t.Fatalf("hash %s candidate %v, want the block: %v", rep.BlockHash, rep.BlockCandidate, tt.stillBlock)
			}
			if tt.diagnosed != (len(rep.Header) == 160 && len(rep.BlockHash) == 64 && rep.ShareDifficulty > 0) {
				t.Fatalf("diagnostics %+v", rep)
			}
		})
	}
}

func TestVerifyUnusable(t *testing.T) {
	tests := []struct {
		name string
		in   string
		edit func(req map[string]any)
		want string
	}{
		{name: "not json", in: "hello", want: "not the expected JSON object"},
		{name: "two objects", in: `{} {}`, want: "more than one JSON value"},
		{name: "unknown field", edit: func(r map[string]any) { r["difficulty_typo"] = 1 }, want: "unknown field"},
		{name: "no notify", edit: func(r map[string]any) { delete(r, "notify") }, want: `"notify" is missing`},
		{name: "bad notify", edit: func(r map[string]any) { r["notify"] = []any{"1"} }, want: "want 9 params"},
		{name: "bad nbits", edit: func(r map[string]any) { n := r["notify"].([]any); n[6] = "00000000" }, want: "invalid compact target"},
		{name: "no extranonce1", edit: func(r map[string]any) { delete(r, "extranonce1") }, want: `"extranonce1" is missing`},
		{name: "bad extranonce1", edit: func(r map[string]any) { r["extranonce1"] = "zz" }, want: "extranonce1"},
		{name: "bad mask", edit: func(r map[string]any) { r["version_mask"] = "1fffe" }, want: "version_mask: want 8 hex digits"},
		{name: "no difficulty", edit: func(r map[string]any) { delete(r, "difficulty") }, want: `"difficulty" is missing`},
		{name: "zero difficulty", edit: func(r map[string]any) { r["difficulty"] = 0 }, want: "difficulty must be a positive number"},
		{name: "string difficulty", edit: func(r map[string]any) { r["difficulty"] = "8192" }, want: "not the expected JSON object"},
		{name: "no submit", edit: func(r map[string]any) { delete(r, "submit") }, want: `"submit" is missing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.in != "" {
				_, err = share.Read(strings.NewReader(tt.in))
			} else {
				req := load(t, "block-881423.json")
				tt.edit(req)
				_, err = verify(t, req, share.Options{})
			}
			if !errors.Is(err, share.ErrUnusable) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrUnusable mentioning %q", err, tt.want)
			}
		})
	}
}

func TestReadRefusesHugeInput(t *testing.T) {
	_, err := share.Read(bytes.NewReader(bytes.Repeat([]byte(" "), 2<<20)))
	if !errors.Is(err, share.ErrUnusable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("%v", err)
	}
}

package main

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// shareBlock881423 is mainnet block 881423 (version 0x2e596000: rolled bits
// 0x0e596000 under the mask 0x1fffe000) as a pool's notify and a miner's
// submit: coinb1/coinb2 are its legacy coinbase split around 4+4 bytes of
// the scriptSig. The same data lives in stratum/share/testdata.
const shareBlock881423 = `{"notify": ["d730f", "8a6ac9e3fe15ca70f8995e21434cb64ac4d2b5e10001543b0000000000000000",
 "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff3d030f730d",
 "0cee220cf1ad9a67b6600000000000000a41706f6c6c6f192f6d696e65642062792032353620466f756e646174696f6e2fffffffff0275aac01200000000160014c64b1b9283ba1ea86bb9e7b696b0c8f68dad04000000000000000000266a24aa21a9edb395560ab72068c2afb1d7e6c7db26b813482089d2c4d2471b9036c5e826140600000000",
 ["4282357ab0a2f4e8e562c8c5eae1d63b559068f9072374b72e26b88ac841908f", "c2bbae90d06f8025ade3516ca2e42d79318b6e56fccb9609df85a654a8341068",
  "cbb30084acbcb5ce6d5436e853bc612466df0c00702be6f51d47072f1a5d0480", "bb092e533f70b79246fc9e4bdc9b81ac8332e56f2651e3b237a150d6d807b081",
  "0d32959988733447cb340326a1fe4d3c2cff5d636e32a4e08c3fc5a234f6f6bc", "8ba3477940924a90067cff3dd30bc46916cf4c2f73fb6229b8f8197b83b6ddb9",
  "3fe97cc5dec1cddd66c9d3780888c145c12418590cd983c4871b1bf03fabbf9e", "bd1c6a3bcd0ebaa0eca54d9c802540f312c7705435601d776b4f59bb52cff67d",
  "8638c10190b8f4f558bafdbb57f46226c349a83f229f431143ae75e425fb5cbd", "6d6f4eae41cccb21a7c97ac496d9f89b8a4f772389b76f7691519dda38264221",
  "82dad7a1e2613af0e61f77f03d6208c83e72f917dade4235cc35e37ee3ad6e3f"],
 "20000000", "17029a8a", "679ac14b", true],
 "extranonce1": "000469c1",
 "submit": ["farm.rig1", "d730f", "9a670483", "679ac169", "ff05fb02", "0e596000"],
 "version_mask": "1fffe000",
 "difficulty": 65536}`

const block881423Header = "0060592ee3c96a8a70ca15fe215e99f84ab64c43e1b5d2c43b540100000000000000000076f63a35f1b8b5016d3eb0cce2eebbdf58bf8fbea4e870c8f770346bdfcf622d69c19a678a9a021702fb05ff"

// edit applies a change to the block request and returns it as JSON.
func editShare(t *testing.T, change func(req map[string]any)) string {
	t.Helper()
	var req map[string]any
	if err := json.Unmarshal([]byte(shareBlock881423), &req); err != nil {
		t.Fatal(err)
	}
	change(req)
	out, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func setSubmit(i int, v any) func(map[string]any) {
	return func(req map[string]any) { req["submit"].([]any)[i] = v }
}

func TestShareVerifyEndToEnd(t *testing.T) {
	contractKeys := []string{"block_candidate", "block_hash", "header", "merkle_root", "reason", "share_difficulty", "valid"}

	verdicts := []struct {
		name      string
		stdin     string
		args      []string
		code      int
		valid     bool
		reason    string
		candidate bool
	}{
		{"real block is valid", shareBlock881423, nil, 0, true, "", true},
		{"ntime window flag", shareBlock881423, []string{"--ntime-window", "1m"}, 0, true, "", true},
		{"wrong nonce", editShare(t, setSubmit(4, "ff05fb03")), nil, 1, false, "low_difficulty", false},
		{"wrong extranonce2", editShare(t, setSubmit(2, "9a670484")), nil, 1, false, "low_difficulty", false},
		{"bits outside the mask", editShare(t, func(r map[string]any) { r["version_mask"] = "00ffe000" }), nil, 1, false, "version_bits_outside_mask", true},
		{"ntime far in the future", editShare(t, setSubmit(3, "679ae000")), nil, 1, false, "bad_ntime", false},
		{"ntime past a narrow window", shareBlock881423, []string{"--ntime-window", "10s"}, 1, false, "bad_ntime", true},
		{"malformed nonce", editShare(t, setSubmit(4, "ff05fbzz")), nil, 1, false, "malformed", false},
		{"submit for another job", editShare(t, setSubmit(1, "beef")), nil, 1, false, "stale", true},
	}
	for _, tt := range verdicts {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runBinary(t, tt.stdin, append([]string{"share", "verify"}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", code, tt.code, stdout, stderr)
			}
			if strings.Count(stdout, "\n") != 1 || !strings.HasSuffix(stdout, "\n") {
				t.Fatalf("stdout is not one line: %q", stdout)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
				t.Fatal(err)
			}
			keys := make([]string, 0, len(raw))
			for k := range raw {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if !reflect.DeepEqual(keys, contractKeys) {
				t.Fatalf("output keys %v, want exactly %v", keys, contractKeys)
			}
			var rep struct {
				Valid           bool    `json:"valid"`
				Reason          string  `json:"reason"`
				BlockHash       string  `json:"block_hash"`
				ShareDifficulty float64 `json:"share_difficulty"`
				Header          string  `json:"header"`
				MerkleRoot      string  `json:"merkle_root"`
				BlockCandidate  bool    `json:"block_candidate"`
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Valid != tt.valid || rep.Reason != tt.reason || rep.BlockCandidate != tt.candidate {
				t.Fatalf("got %+v", rep)
			}
			if tt.valid {
				if rep.BlockHash != "0000000000000000000269d52c24ea451225613aab095d90d771d4e29aa96cdd" ||
					rep.Header != block881423Header ||
					rep.MerkleRoot != "2d62cfdf6b3470f7c870e8a4be8fbf58dfbbeee2ccb03e6d01b5b8f1353af676" ||
					rep.ShareDifficulty < 1.16e14 || rep.ShareDifficulty > 1.17e14 || stderr != "" {
					t.Fatalf("got %+v, stderr %q", rep, stderr)
				}
			} else if !strings.Contains(stderr, "rejected ("+tt.reason+")") {
				t.Fatalf("stderr %q does not explain the rejection", stderr)
			}
		})
	}

	unusable := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"not json", "GET / HTTP/1.1\r\n", nil, "not the expected JSON object"},
		{"empty", "", nil, "not the expected JSON object"},
		{"missing difficulty", editShare(t, func(r map[string]any) { delete(r, "difficulty") }), nil, `"difficulty" is missing`},
		{"bad notify", editShare(t, func(r map[string]any) { r["notify"].([]any)[1] = "00" }), nil, "prevhash: want 64 hex digits, got 2"},
		{"bad extranonce1", editShare(t, func(r map[string]any) { r["extranonce1"] = "0x12" }), nil, "extranonce1"},
		{"unknown field", editShare(t, func(r map[string]any) { r["extranonce2_size"] = 4 }), nil, "unknown field"},
		{"argument instead of stdin", shareBlock881423, []string{"share.json"}, "read from stdin"},
	}
	for _, tt := range unusable {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runBinary(t, tt.stdin, append([]string{"share", "verify"}, tt.args...)...)
			if code != 2 {
				t.Fatalf("exit %d, want 2\nstdout %s\nstderr %s", code, stdout, stderr)
			}
			var out struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(stdout), &out); err != nil || !strings.Contains(out.Error, tt.want) {
				t.Fatalf("stdout %q: want a JSON error mentioning %q", stdout, tt.want)
			}
			if !strings.HasPrefix(stderr, "proxyd share verify: ") || !strings.Contains(stderr, tt.want) {
				t.Fatalf("stderr %q", stderr)
			}
		})
	}

	help := []struct {
		name string
		args []string
		code int
		out  string // expected on stdout (code 0) or stderr
	}{
		{"share help", []string{"share", "--help"}, 0, "Usage: proxyd share verify"},
		{"verify help", []string{"share", "verify", "--help"}, 0, "-ntime-window"},
		{"missing verb", []string{"share"}, 2, "missing verb"},
		{"unknown verb", []string{"share", "check"}, 2, `unknown verb "check"`},
		{"bad flag", []string{"share", "verify", "--nope"}, 2, "flag provided but not defined"},
		{"listed in proxyd help", []string{"--help"}, 0, "share "},
	}
	for _, tt := range help {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runBinary(t, "", tt.args...)
			got := stdout
			if tt.code != 0 {
				got = stderr
			}
			if code != tt.code || !strings.Contains(got, tt.out) {
				t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
			}
		})
	}
}

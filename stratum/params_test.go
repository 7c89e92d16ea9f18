package stratum_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/chainhash/v2"

	"github.com/hashgate/proxyd/stratum"
)

// decoder is what every params type implements.
type decoder interface {
	stratum.Params
	DecodeParams([]byte) error
}

// roundTrip decodes params into a fresh value of p's type, re-encodes it,
// decodes that again and checks both decodes agree.
func roundTrip(t *testing.T, p decoder, params string) decoder {
	t.Helper()
	if err := p.DecodeParams([]byte(params)); err != nil {
		t.Fatalf("decode %s: %v", params, err)
	}
	enc := p.AppendParams(nil)
	if !json.Valid(enc) {
		t.Fatalf("encoded params are not JSON: %s", enc)
	}
	again := reflect.New(reflect.TypeOf(p).Elem()).Interface().(decoder)
	if err := again.DecodeParams(enc); err != nil {
		t.Fatalf("decode re-encoded %s: %v", enc, err)
	}
	if !reflect.DeepEqual(normalize(p), normalize(again)) {
		t.Fatalf("round trip changed the value:\n%+v\n%+v\nvia %s", p, again, enc)
	}
	return p
}

// normalize makes Submit's aliasing byte slices comparable.
func normalize(p decoder) any {
	if s, ok := p.(*stratum.Submit); ok {
		c := *s
		c.Worker = append([]byte{}, s.Worker...)
		c.JobID = append([]byte{}, s.JobID...)
		return c
	}
	return p
}

func TestDecodeMinerMethods(t *testing.T) {
	tests := []struct {
		name   string
		p      decoder
		params string
		want   decoder
	}{
		{"configure", &stratum.Configure{},
			`[["version-rolling","minimum-difficulty"],{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2,"minimum-difficulty.value":2048}]`,
			&stratum.Configure{Extensions: []string{"version-rolling", "minimum-difficulty"}, Params: stratum.Object{
				{Key: "version-rolling.mask", Value: json.RawMessage(`"1fffe000"`)},
				{Key: "version-rolling.min-bit-count", Value: json.RawMessage(`2`)},
				{Key: "minimum-difficulty.value", Value: json.RawMessage(`2048`)},
			}}},
		{"configure without params object", &stratum.Configure{}, `[["subscribe-extranonce"]]`,
			&stratum.Configure{Extensions: []string{"subscribe-extranonce"}}},
		{"subscribe bmminer", &stratum.Subscribe{}, `["bmminer/2.0.0"]`, &stratum.Subscribe{UserAgent: "bmminer/2.0.0"}},
		{"subscribe whatsminer resume", &stratum.Subscribe{}, `["whatsminer/v1.0","0a1b2c3d"]`,
			&stratum.Subscribe{UserAgent: "whatsminer/v1.0", SessionID: "0a1b2c3d"}},
		{"subscribe braiins with nulls", &stratum.Subscribe{}, `["Braiins OS 22.08", null, "192.168.1.207:34255", null]`,
			&stratum.Subscribe{UserAgent: "Braiins OS 22.08", Host: "192.168.1.207:34255"}},
		{"subscribe numeric port", &stratum.Subscribe{}, `["cgminer/4.10", null, "pool.example", 3333]`,
			&stratum.Subscribe{UserAgent: "cgminer/4.10", Host: "pool.example", Port: "3333"}},
		{"subscribe empty", &stratum.Subscribe{}, `[]`, &stratum.Subscribe{}},
		{"authorize", &stratum.Authorize{}, `["acct.worker1","x"]`, &stratum.Authorize{User: "acct.worker1", Password: "x"}},
		{"authorize empty password", &stratum.Authorize{}, `["acct.worker1",""]`, &stratum.Authorize{User: "acct.worker1"}},
		{"authorize null password", &stratum.Authorize{}, `["acct.worker1",null]`, &stratum.Authorize{User: "acct.worker1"}},
		{"authorize no password", &stratum.Authorize{}, `["acct.worker1"]`, &stratum.Authorize{User: "acct.worker1"}},
		{"submit 5", &stratum.Submit{}, `["acct.w","bf","0a1b2c3d","504e86ed","B2957C02"]`,
			&stratum.Submit{Worker: []byte("acct.w"), JobID: []byte("bf"), Extranonce2: ext(0x0a, 0x1b, 0x2c, 0x3d), NTime: 0x504e86ed, Nonce: 0xb2957c02}},
		{"submit 6", &stratum.Submit{}, `["acct.w","bf","0a1b2c3d","504e86ed","b2957c02","1fffe000"]`,
			&stratum.Submit{Worker: []byte("acct.w"), JobID: []byte("bf"), Extranonce2: ext(0x0a, 0x1b, 0x2c, 0x3d), NTime: 0x504e86ed, Nonce: 0xb2957c02, VersionBits: 0x1fffe000, HasVersionBits: true}},
		{"submit escaped worker", &stratum.Submit{}, `["acct.\u0077","bf","00","504e86ed","b2957c02"]`,
			&stratum.Submit{Worker: []byte("acct.w"), JobID: []byte("bf"), Extranonce2: ext(0), NTime: 0x504e86ed, Nonce: 0xb2957c02}},
		{"suggest difficulty", &stratum.SuggestDifficulty{}, `[1000]`, &stratum.SuggestDifficulty{Difficulty: 1000}},
		{"suggest difficulty fractional", &stratum.SuggestDifficulty{}, `[16383.75]`, &stratum.SuggestDifficulty{Difficulty: 16383.75}},
		{"suggest target", &stratum.SuggestTarget{}, `["00000000ffff0000000000000000000000000000000000000000000000000000"]`,
			&stratum.SuggestTarget{Target: [32]byte{4: 0xff, 5: 0xff}}},
		{"extranonce subscribe", &stratum.ExtranonceSubscribe{}, `[]`, &stratum.ExtranonceSubscribe{}},
		{"ping", &stratum.Ping{}, `[]`, &stratum.Ping{}},
		{"ping null params", &stratum.Ping{}, `null`, &stratum.Ping{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, tt.p, tt.params)
			if !reflect.DeepEqual(normalize(got), normalize(tt.want)) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func ext(b ...byte) stratum.Extranonce {
	e, err := stratum.MakeExtranonce(b)
	if err != nil {
		panic(err)
	}
	return e
}

func TestDecodeServerMethods(t *testing.T) {
	prev, _ := chainhash.NewHashFromStr("00000000000000000001543bc4d2b5e1434cb64af8995e21fe15ca708a6ac9e3")
	tests := []struct {
		name   string
		p      decoder
		params string
		want   decoder
	}{
		{"set difficulty", &stratum.SetDifficulty{}, `[8192]`, &stratum.SetDifficulty{Difficulty: 8192}},
		{"set difficulty fraction", &stratum.SetDifficulty{}, `[16383.75]`, &stratum.SetDifficulty{Difficulty: 16383.75}},
		{"set difficulty exponent", &stratum.SetDifficulty{}, `[1e-3]`, &stratum.SetDifficulty{Difficulty: 0.001}},
		{"notify", &stratum.Notify{},
			// The prevhash is block 881422's explorer hash with its 8-digit groups reversed.
			`["1d","8a6ac9e3fe15ca70f8995e21434cb64ac4d2b5e10001543b0000000000000000","01000000","ffffffff",["0000000000000000000000000000000000000000000000000000000000000001"],"20000000","17029a8a","679ac169",true]`,
			&stratum.Notify{JobID: "1d", PrevHash: *prev, Coinb1: []byte{1, 0, 0, 0}, Coinb2: []byte{0xff, 0xff, 0xff, 0xff},
				MerkleBranch: []chainhash.Hash{{31: 1}}, Version: 0x20000000, NBits: 0x17029a8a, NTime: 0x679ac169, CleanJobs: true}},
		{"notify empty branch", &stratum.Notify{},
			`["x","0000000000000000000000000000000000000000000000000000000000000000","","",[],"00000001","1d00ffff","00000000",false]`,
			&stratum.Notify{JobID: "x", Coinb1: []byte{}, Coinb2: []byte{}, Version: 1, NBits: 0x1d00ffff}},
		{"set version mask", &stratum.SetVersionMask{}, `["1fffe000"]`, &stratum.SetVersionMask{Mask: 0x1fffe000}},
		{"set extranonce", &stratum.SetExtranonce{}, `["08000002",4]`, &stratum.SetExtranonce{Extranonce1: []byte{8, 0, 0, 2}, Extranonce2Size: 4}},
		{"reconnect empty", &stratum.Reconnect{}, `[]`, &stratum.Reconnect{}},
		{"reconnect full", &stratum.Reconnect{}, `["stratum.example.com",3333,10]`, &stratum.Reconnect{Host: "stratum.example.com", Port: 3333, Wait: 10}},
		{"reconnect string port", &stratum.Reconnect{}, `["stratum.example.com","3333"]`, &stratum.Reconnect{Host: "stratum.example.com", Port: 3333}},
		{"show message", &stratum.ShowMessage{}, `["maintenance at 02:00 \u2014 back soon"]`, &stratum.ShowMessage{Text: "maintenance at 02:00 — back soon"}},
		{"get version", &stratum.GetVersion{}, `[]`, &stratum.GetVersion{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, tt.p, tt.params)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestNotifyEncodesExactly re-encodes a lowercase notify byte for byte.
func TestNotifyEncodesExactly(t *testing.T) {
	params := `["1d","8a6ac9e3fe15ca70f8995e21434cb64ac4d2b5e10001543b0000000000000000","0100000001","0affffffff",["4282357ab0a2f4e8e562c8c5eae1d63b559068f9072374b72e26b88ac841908f","c2bbae90d06f8025ade3516ca2e42d79318b6e56fccb9609df85a654a8341068"],"20000000","17029a8a","679ac169",false]`
	var n stratum.Notify
	if err := n.DecodeParams([]byte(params)); err != nil {
		t.Fatal(err)
	}
	if got := string(n.AppendParams(nil)); got != strings.ReplaceAll(params, " ", "") {
		t.Fatalf("got  %s\nwant %s", got, params)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		p      decoder
		params string
		want   string
	}{
		{"submit 4 params", &stratum.Submit{}, `["w","j","00","504e86ed"]`, "want 5 or 6 params, got 4"},
		{"submit 7 params", &stratum.Submit{}, `["w","j","00","504e86ed","00000000","00000000","x"]`, "more than 6 params"},
		{"submit short nonce", &stratum.Submit{}, `["w","j","00","504e86ed","b2957c"]`, "nonce: want 8 hex digits, got 6"},
		{"submit bad ntime digit", &stratum.Submit{}, `["w","j","00","504g86ed","b2957c02"]`, `ntime: 'g' at position 3 is not a hex digit`},
		{"submit odd extranonce2", &stratum.Submit{}, `["w","j","abc","504e86ed","b2957c02"]`, "extranonce2: odd number of hex digits"},
		{"submit long extranonce2", &stratum.Submit{}, `["w","j","` + strings.Repeat("00", 33) + `","504e86ed","b2957c02"]`, "more than the maximum of 64"},
		{"submit numeric nonce", &stratum.Submit{}, `["w","j","00","504e86ed",12345]`, "nonce must be a string"},
		{"submit bad version bits", &stratum.Submit{}, `["w","j","00","504e86ed","b2957c02","1fffe0"]`, "version_bits: want 8 hex digits"},
		{"submit long job id", &stratum.Submit{}, `["w","` + strings.Repeat("j", 129) + `","00","504e86ed","b2957c02"]`, "job_id longer than 128"},
		{"submit object params", &stratum.Submit{}, `{"worker":"w"}`, "params must be an array"},
		{"notify 8 params", &stratum.Notify{}, `["1","","","",[],"","",""]`, "want 9 params, got 8"},
		{"notify short prevhash", &stratum.Notify{}, `["1","00","","",[],"20000000","1d00ffff","00000000",true]`, "prevhash: want 64 hex digits, got 2"},
		{"notify bad coinb1", &stratum.Notify{}, `["1","` + strings.Repeat("0", 64) + `","zz","",[],"20000000","1d00ffff","00000000",true]`, "coinb1: 'z' at position 0"},
		{"notify bad branch", &stratum.Notify{}, `["1","` + strings.Repeat("0", 64) + `","","",["00"],"20000000","1d00ffff","00000000",true]`, "mining.notify: merkle_branch[0]: want 64 hex digits, got 2"},
		{"notify branch too long", &stratum.Notify{}, `["1","` + strings.Repeat("0", 64) + `","","",[` + strings.Repeat(`"`+strings.Repeat("0", 64)+`",`, 32) + `"` + strings.Repeat("0", 64) + `"],"20000000","1d00ffff","00000000",true]`, "more than 32 params"},
		{"notify clean jobs string", &stratum.Notify{}, `["1","` + strings.Repeat("0", 64) + `","","",[],"20000000","1d00ffff","00000000","true"]`, "clean_jobs must be true or false"},
		{"notify empty job id", &stratum.Notify{}, `["","` + strings.Repeat("0", 64) + `","","",[],"20000000","1d00ffff","00000000",true]`, "job_id must be 1 to 128 bytes"},
		{"set difficulty zero", &stratum.SetDifficulty{}, `[0]`, "difficulty must be positive"},
		{"set difficulty string", &stratum.SetDifficulty{}, `["8192"]`, "difficulty must be a number"},
		{"set difficulty overflow", &stratum.SetDifficulty{}, `[1e999]`, "not a finite number"},
		{"set version mask short", &stratum.SetVersionMask{}, `["1fffe"]`, "mask: want 8 hex digits"},
		{"set extranonce size", &stratum.SetExtranonce{}, `["00",99]`, "extranonce2_size: 99 is not an integer between 0 and 32"},
		{"authorize no params", &stratum.Authorize{}, `[]`, "want 1 or 2 params, got 0"},
		{"authorize numeric user", &stratum.Authorize{}, `[5]`, "user must be a string"},
		{"subscribe 5 params", &stratum.Subscribe{}, `["a",null,null,null,null]`, "more than 4 params"},
		{"subscribe port range", &stratum.Subscribe{}, `["a",null,"h",70000]`, "port: 70000"},
		{"configure not array", &stratum.Configure{}, `["version-rolling"]`, "first param must be an array"},
		{"configure params not object", &stratum.Configure{}, `[["version-rolling"],[]]`, "must be a JSON object"},
		{"suggest target short", &stratum.SuggestTarget{}, `["00ff"]`, "target: want 64 hex digits"},
		{"reconnect bad port", &stratum.Reconnect{}, `["h","x"]`, "port"},
		{"show message number", &stratum.ShowMessage{}, `[1]`, "text must be a string"},
		{"ping object", &stratum.Ping{}, `{}`, "params must be an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.DecodeParams([]byte(tt.params))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if !errors.Is(err, stratum.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestHexErrorIsReadable(t *testing.T) {
	var s stratum.Submit
	err := s.DecodeParams([]byte(`["w","j","00","504e86ed","b2957cx2"]`))
	var he *stratum.HexError
	if !errors.As(err, &he) || he.Field != "mining.submit: nonce" || he.BadAt != 6 || he.Bad != 'x' {
		t.Fatalf("%#v", err)
	}
	if err.Error() != `mining.submit: nonce: 'x' at position 6 is not a hex digit` {
		t.Fatalf("message %q", err.Error())
	}
}

func TestConfigureHelpers(t *testing.T) {
	var c stratum.Configure
	if err := c.DecodeParams([]byte(`[["version-rolling","minimum-difficulty"],{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2,"minimum-difficulty.value":2048}]`)); err != nil {
		t.Fatal(err)
	}
	mask, bits, ok, err := c.VersionRolling()
	if err != nil || !ok || mask != 0x1fffe000 || bits != 2 {
		t.Fatalf("VersionRolling %08x %d %v %v", mask, bits, ok, err)
	}
	d, ok, err := c.MinimumDifficulty()
	if err != nil || !ok || d != 2048 {
		t.Fatalf("MinimumDifficulty %v %v %v", d, ok, err)
	}
	if c.Requested(stratum.ExtInfo) {
		t.Fatal("info was not requested")
	}
	var bare stratum.Configure
	if err := bare.DecodeParams([]byte(`[["version-rolling"],{}]`)); err != nil {
		t.Fatal(err)
	}
	if mask, _, ok, _ := bare.VersionRolling(); !ok || mask != 0xffffffff {
		t.Fatalf("a request without a mask means any bit: %08x", mask)
	}
}

func TestExtranonce(t *testing.T) {
	e, err := stratum.MakeExtranonce([]byte{0xab}, []byte{1, 2, 3})
	if err != nil || e.String() != "ab010203" || e.Len() != 4 {
		t.Fatalf("%v %s", err, e)
	}
	if _, err := stratum.MakeExtranonce(make([]byte, 20), make([]byte, 13)); err == nil {
		t.Fatal("33-byte extranonce accepted")
	}
}

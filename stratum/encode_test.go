package stratum_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/hashgate/proxyd/stratum"
)

func TestAppendLines(t *testing.T) {
	id7 := stratum.NumberID(7)
	sid, _ := stratum.ParseID([]byte(`"abc"`))
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"request", stratum.AppendRequest(nil, id7, &stratum.Subscribe{UserAgent: "proxyd/1"}),
			`{"id":7,"method":"mining.subscribe","params":["proxyd/1"]}`},
		{"submit request", stratum.AppendRequest(nil, id7, &stratum.Submit{Worker: []byte("acct"), JobID: []byte("bf"), Extranonce2: ext(1, 2), NTime: 0x504e86ed, Nonce: 0xb2957c02, VersionBits: 0x00002000, HasVersionBits: true}),
			`{"id":7,"method":"mining.submit","params":["acct","bf","0102","504e86ed","b2957c02","00002000"]}`},
		{"notification", stratum.AppendNotification(nil, &stratum.SetDifficulty{Difficulty: 16383.75}),
			`{"id":null,"method":"mining.set_difficulty","params":[16383.75]}`},
		{"integral difficulty", stratum.AppendNotification(nil, &stratum.SetDifficulty{Difficulty: 1e6}),
			`{"id":null,"method":"mining.set_difficulty","params":[1000000]}`},
		{"tiny difficulty without exponent", stratum.AppendNotification(nil, &stratum.SetDifficulty{Difficulty: 0.0001}),
			`{"id":null,"method":"mining.set_difficulty","params":[0.0001]}`},
		{"version mask", stratum.AppendNotification(nil, &stratum.SetVersionMask{Mask: 0x1fffe000}),
			`{"id":null,"method":"mining.set_version_mask","params":["1fffe000"]}`},
		{"set extranonce", stratum.AppendNotification(nil, &stratum.SetExtranonce{Extranonce1: []byte{0xab, 0xcd}, Extranonce2Size: 4}),
			`{"id":null,"method":"mining.set_extranonce","params":["abcd",4]}`},
		{"reconnect to me", stratum.AppendNotification(nil, &stratum.Reconnect{}),
			`{"id":null,"method":"client.reconnect","params":[]}`},
		{"reconnect elsewhere", stratum.AppendNotification(nil, &stratum.Reconnect{Host: "10.0.0.2", Port: 3333}),
			`{"id":null,"method":"client.reconnect","params":["10.0.0.2",3333,0]}`},
		{"show message escapes", stratum.AppendNotification(nil, &stratum.ShowMessage{Text: "a \"b\"\n<c>"}),
			`{"id":null,"method":"client.show_message","params":["a \"b\"\n<c>"]}`},
		{"get version", stratum.AppendRequest(nil, sid, &stratum.GetVersion{}),
			`{"id":"abc","method":"client.get_version","params":[]}`},
		{"configure", stratum.AppendRequest(nil, id7, &stratum.Configure{Extensions: []string{"version-rolling"}, Params: stratum.Object{{Key: "version-rolling.mask", Value: json.RawMessage(`"1fffe000"`)}}}),
			`{"id":7,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000"}]}`},
		{"true", stratum.AppendBoolResult(nil, sid, true), `{"id":"abc","result":true,"error":null}`},
		{"false", stratum.AppendBoolResult(nil, id7, false), `{"id":7,"result":false,"error":null}`},
		{"pong", stratum.AppendResult(nil, id7, []byte(`"pong"`)), `{"id":7,"result":"pong","error":null}`},
		{"null result", stratum.AppendResult(nil, id7, nil), `{"id":7,"result":null,"error":null}`},
		{"error", stratum.AppendError(nil, id7, stratum.CodeLowDifficulty, "low difficulty share"),
			`{"id":7,"result":null,"error":[23,"low difficulty share",null]}`},
		{"error to null id", stratum.AppendError(nil, stratum.ID{}, stratum.CodeOther, "unknown method"),
			`{"id":null,"result":null,"error":[20,"unknown method",null]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if string(tt.got) != tt.want+"\n" {
				t.Fatalf("got  %s\nwant %s", tt.got, tt.want)
			}
			var m stratum.Message
			if err := stratum.ParseMessage(tt.got, &m); err != nil {
				t.Fatalf("own output does not parse: %v", err)
			}
		})
	}
}

// TestEchoID answers with the id exactly as the miner wrote it.
func TestEchoID(t *testing.T) {
	for _, raw := range []string{`0`, `-12`, `1.50e3`, `"x"`, `"a\u0062"`, `null`, `18446744073709551616`} {
		var m stratum.Message
		if err := stratum.ParseMessage([]byte(`{"id":`+raw+`,"method":"mining.ping","params":[]}`), &m); err != nil {
			t.Fatal(err)
		}
		got := string(stratum.AppendResult(nil, m.ID, []byte(`"pong"`)))
		if want := `{"id":` + raw + `,"result":"pong","error":null}` + "\n"; got != want {
			t.Errorf("got %s want %s", got, want)
		}
	}
}

func TestParseError(t *testing.T) {
	tests := []struct {
		raw  string
		want *stratum.Error
		err  bool
	}{
		{``, nil, false},
		{`null`, nil, false},
		{`[23,"Low difficulty share",null]`, &stratum.Error{Code: 23, Message: "Low difficulty share"}, false},
		{`[21,"Job not found"]`, &stratum.Error{Code: 21, Message: "Job not found"}, false},
		{`[-32601]`, &stratum.Error{Code: -32601}, false},
		{`{"code":24,"message":"Unauthorized worker"}`, &stratum.Error{Code: 24, Message: "Unauthorized worker"}, false},
		{`"Stale share"`, &stratum.Error{Code: 20, Message: "Stale share"}, false},
		{`[1.5,"x"]`, nil, true},
		{`[]`, nil, true},
		{`true`, nil, true},
		{`[20,5]`, nil, true},
	}
	for _, tt := range tests {
		got, err := stratum.ParseError([]byte(tt.raw))
		if (err != nil) != tt.err || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseError(%s) = %+v, %v", tt.raw, got, err)
		}
	}
	if (&stratum.Error{Code: 22, Message: "Duplicate share"}).Error() != "stratum error 22: Duplicate share" {
		t.Fatal("Error() text")
	}
}

func TestParseResults(t *testing.T) {
	for raw, want := range map[string]bool{"true": true, "false": false, "null": false} {
		if got, err := stratum.ParseBoolResult([]byte(raw)); err != nil || got != want {
			t.Errorf("ParseBoolResult(%s) = %v %v", raw, got, err)
		}
	}
	if _, err := stratum.ParseBoolResult([]byte(`"yes"`)); err == nil {
		t.Error("string accepted as bool result")
	}
	if s, err := stratum.ParseStringResult([]byte(`"pong"`)); err != nil || s != "pong" {
		t.Errorf("ParseStringResult: %q %v", s, err)
	}
}

func TestSubscribeResult(t *testing.T) {
	tests := []struct {
		raw  string
		want stratum.SubscribeResult
		err  string
	}{
		{`[[["mining.set_difficulty","b4b6693b72a50c7116db18d6497cac52"],["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],"08000002",4]`,
			stratum.SubscribeResult{Subscriptions: [][2]string{{"mining.set_difficulty", "b4b6693b72a50c7116db18d6497cac52"}, {"mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"}}, Extranonce1: []byte{8, 0, 0, 2}, Extranonce2Size: 4}, ""},
		{`[["mining.notify","ae6812eb"],"f8002c90",3]`,
			stratum.SubscribeResult{Subscriptions: [][2]string{{"mining.notify", "ae6812eb"}}, Extranonce1: []byte{0xf8, 0, 0x2c, 0x90}, Extranonce2Size: 3}, ""},
		{`[null,"00",8]`, stratum.SubscribeResult{Extranonce1: []byte{0}, Extranonce2Size: 8}, ""},
		{`[[],"0",4]`, stratum.SubscribeResult{}, "odd number of hex digits"},
		{`[[],"00",-1]`, stratum.SubscribeResult{}, "extranonce2_size"},
		{`[[],"00"]`, stratum.SubscribeResult{}, "want 3 elements"},
	}
	for _, tt := range tests {
		got, err := stratum.ParseSubscribeResult([]byte(tt.raw))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.raw, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %+v %v", tt.raw, got, err)
			continue
		}
		again, err := stratum.ParseSubscribeResult(got.AppendJSON(nil))
		if err != nil || !reflect.DeepEqual(again.Extranonce1, got.Extranonce1) || again.Extranonce2Size != got.Extranonce2Size {
			t.Errorf("%s: round trip %+v %v", tt.raw, again, err)
		}
	}
}

func TestConfigureResult(t *testing.T) {
	var r stratum.ConfigureResult
	r.SetVersionRolling(true, 0x1fffe000)
	r.Set(stratum.ExtMinimumDifficulty, json.RawMessage("false"))
	if got := string(r.AppendJSON(nil)); got != `{"version-rolling":true,"version-rolling.mask":"1fffe000","minimum-difficulty":false}` {
		t.Fatalf("got %s", got)
	}
	parsed, err := stratum.ParseConfigureResult(r.AppendJSON(nil))
	if err != nil {
		t.Fatal(err)
	}
	granted, mask, err := parsed.VersionRolling()
	if !granted || mask != 0x1fffe000 || err != nil {
		t.Fatalf("VersionRolling %v %08x %v", granted, mask, err)
	}
	var refused stratum.ConfigureResult
	refused.SetVersionRolling(false, 0)
	if granted, _, _ := refused.VersionRolling(); granted {
		t.Fatal("refusal reads as granted")
	}
	if _, err := stratum.ParseConfigureResult([]byte(`{"version-rolling":true}`)); err != nil {
		t.Fatal(err)
	}
	bad, _ := stratum.ParseConfigureResult([]byte(`{"version-rolling":true}`))
	if _, _, err := bad.VersionRolling(); err == nil {
		t.Fatal("granted without a mask accepted")
	}
}

func TestParseHexUint32(t *testing.T) {
	if v, err := stratum.ParseHexUint32("mask", "1FFFE000"); err != nil || v != 0x1fffe000 {
		t.Fatalf("%08x %v", v, err)
	}
	if _, err := stratum.ParseHexUint32("mask", "1fffe00"); err == nil || err.Error() != "mask: want 8 hex digits, got 7" {
		t.Fatalf("%v", err)
	}
	if got := string(stratum.AppendHexUint32(nil, 0xdeadbeef)); got != "deadbeef" {
		t.Fatal(got)
	}
}

func TestAppendNotifyNoAllocs(t *testing.T) {
	n := benchNotify()
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		buf = stratum.AppendNotification(buf[:0], &n)
	})
	if allocs != 0 {
		t.Fatalf("encoding a notify allocates %v times", allocs)
	}
}

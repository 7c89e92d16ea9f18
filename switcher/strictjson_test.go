package switcher

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

const validBody = `{"gpus": 1, "start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z", "price_usd_per_gpu_hour": 2, "workload": "llm"}`

// withField returns validBody with one more member.
func withField(member string) string { return validBody[:len(validBody)-1] + ", " + member + "}" }

func TestStrictObject(t *testing.T) {
	tests := []struct {
		name, in string
		field    string // the field a FieldError names ("" for none)
		class    error  // errDuplicateKey, errUnknownField or nil
		want     string // in the message
	}{
		{"valid", validBody, "", nil, ""},
		{"case differs", withField(`"GPUS": 7`), "GPUS", errUnknownField, `did you mean "gpus"`},
		{"duplicate", withField(`"gpus": 7`), "gpus", errDuplicateKey, "more than once"},
		{"duplicate by escape", withField(`"\u0067pus": 7`), "gpus", errDuplicateKey, "more than once"},
		{"unknown", withField(`"gpu": 7`), "gpu", errUnknownField, "known: id, gpus"},
		{"nested duplicate", withField(`"pin": [{"a": 1, "a": 2}]`), "pin", errDuplicateKey, `"a" appears more than once`},
		{"too deep", withField(`"pin": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40)), "", nil, "nested more than"},
		{"not an object", `[1]`, "", nil, "expected an object"},
		{"empty", ``, "", nil, "ends early"},
		{"truncated", `{"gpus": 1,`, "", nil, "bad JSON"},
		{"two values", validBody + validBody, "", nil, "more than one JSON value"},
		{"trailing garbage", validBody + " x", "", nil, "bad JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := strictObject([]byte(tc.in), contractFields)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			var fe *FieldError
			if errors.As(err, &fe) != (tc.field != "") || (fe != nil && (fe.Field != tc.field || !errors.Is(err, tc.class))) {
				t.Errorf("error %#v, want field %q of class %v", err, tc.field, tc.class)
			}
		})
	}
}

// strictObject's raw values are the members' own bytes.
func TestStrictObjectRawValues(t *testing.T) {
	fields, err := strictObject([]byte(`{ "id" : "a" , "pin":["x", "y"] ,"n":{"k":[1,2]}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"id": `"a"`, "pin": `["x", "y"]`, "n": `{"k":[1,2]}`} {
		if got := strings.TrimSpace(string(fields[k])); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// Issue 12 #9: contract JSON is matched case-insensitively and the last
// duplicate wins ({"gpus":1,...,"GPUS":7} made a 7-GPU contract), a body
// over 1 MiB got 400 instead of 413, errors echoed up to 1 MB of input.
func TestAPIContractJSONIsStrict(t *testing.T) {
	a := newAPIHarness(t, harnessOpts{noRun: true})
	now := a.clock.Now()
	body := `{"gpus": 1, "start": "` + now.Format(time.RFC3339) + `", "end": "` + now.Add(time.Hour).Format(time.RFC3339) +
		`", "price_usd_per_gpu_hour": 2, "workload": "llm"}`
	with := func(member string) string { return body[:len(body)-1] + ", " + member + "}" }
	long := strings.Repeat("x", 900<<10) // under the body limit, far over any echo
	tests := []struct {
		name, method, path, body string
		code                     int
		field                    string
	}{
		{"case-folded duplicate", "PUT", "/api/v1/contracts/a", with(`"GPUS": 7`), 400, "GPUS"},
		{"exact duplicate", "PUT", "/api/v1/contracts/a", with(`"gpus": 7`), 400, "gpus"},
		{"wrong case alone", "PUT", "/api/v1/contracts/a", strings.Replace(body, `"gpus"`, `"Gpus"`, 1), 400, "Gpus"},
		{"unknown field", "PUT", "/api/v1/contracts/a", with(`"gpu": 7`), 400, "gpu"},
		{"long value", "PUT", "/api/v1/contracts/a", strings.Replace(body, now.Format(time.RFC3339), long, 1), 400, "start"},
		{"long field name", "PUT", "/api/v1/contracts/a", with(`"` + long + `": 1`), 400, clip(long)},
		{"long number", "PUT", "/api/v1/contracts/a", strings.Replace(body, `"gpus": 1`, `"gpus": 1`+strings.Repeat("0", 900<<10), 1), 400, "gpus"},
		{"long workload", "PUT", "/api/v1/contracts/a", strings.Replace(body, `"llm"`, `"`+long+`"`, 1), 400, "workload"},
		{"long pin", "PUT", "/api/v1/contracts/a", with(`"pin": ["` + long + `"]`), 400, "pin"},
		{"long path id", "PUT", "/api/v1/contracts/a" + strings.Repeat("x", 64<<10), body, 400, "id"},
		{"long id mismatch", "PUT", "/api/v1/contracts/a", with(`"id": "` + long + `"`), 400, "id"},
		{"over 1 MiB", "PUT", "/api/v1/contracts/a", with(`"pin": ["` + strings.Repeat("y", 1<<20) + `"]`), 413, ""},
		{"cordon duplicate", "POST", "/api/v1/gpus/" + a.uuids[0] + "/cordon", `{"reason": "fan", "reason": "psu"}`, 400, "reason"},
		{"cordon case", "POST", "/api/v1/gpus/" + a.uuids[0] + "/cordon", `{"reason": "fan", "Force": true}`, 400, "Force"},
		{"cordon over 1 MiB", "POST", "/api/v1/gpus/" + a.uuids[0] + "/cordon", `{"reason": "` + strings.Repeat("y", 1<<20) + `"}`, 413, ""},
		{"long GPU path", "POST", "/api/v1/gpus/GPU-" + strings.Repeat("z", 64<<10) + "/uncordon", "", 404, ""},
		{"long contract path", "GET", "/api/v1/contracts/" + strings.Repeat("q", 64<<10), "", 404, ""},
		{"long contract path delete", "DELETE", "/api/v1/contracts/" + strings.Repeat("q", 64<<10), "", 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, resp := a.do(tc.method, tc.path, tc.body)
			var e struct{ Error, Field string }
			if err := json.Unmarshal([]byte(resp), &e); err != nil {
				t.Fatalf("%d, not a JSON error: %.200s", code, resp)
			}
			if code != tc.code || e.Field != tc.field || e.Error == "" {
				t.Errorf("%d %.300s; want %d naming field %q", code, resp, tc.code, tc.field)
			}
			// Never more than a short prefix of the input.
			for _, run := range []string{"x", "y", "z", "q", "0"} {
				if strings.Contains(resp, strings.Repeat(run, maxEcho+1)) {
					t.Errorf("the answer (%d bytes) echoes more than %d bytes of the input", len(resp), maxEcho)
				}
			}
			if len(resp) > 1024 {
				t.Errorf("the answer is %d bytes", len(resp))
			}
		})
	}
	if cs := a.sw.Contracts(); len(cs) != 0 {
		t.Errorf("a refused body made a contract: %+v", cs)
	}
	if st := a.gpu(0); st.Cordon != nil {
		t.Errorf("a refused cordon body cordoned: %+v", st.Cordon)
	}
	// The strict decoder still takes what is right.
	if code, resp := a.do("PUT", "/api/v1/contracts/ok", body); code != http.StatusCreated {
		t.Fatalf("valid body: %d %s", code, resp)
	}
	if st := a.contractStatus("ok"); st.GPUs != 1 {
		t.Errorf("gpus %d", st.GPUs)
	}
}

// The polled feed is held to the same rules (issue 12 #9).
func TestParseContractListIsStrict(t *testing.T) {
	entry := `{"id":"a","gpus":1,"start":"2026-12-01T00:00:00Z","end":"2026-12-02T00:00:00Z","price_usd_per_gpu_hour":1,"workload":"w"`
	long := strings.Repeat("x", 64<<10)
	tests := []struct {
		name, body string
		invalid    string // the entry kept as invalid, with this in its why
		err        string // the poll fails with this
	}{
		{"case-folded duplicate", `[` + entry + `,"GPUS":7}]`, "GPUS", ""},
		{"exact duplicate", `[` + entry + `,"gpus":7}]`, "", "gpus: appears more than once"},
		{"duplicate id", `[` + entry + `,"id":"b"}]`, "", "id: appears more than once"},
		{"id in capitals", `[` + strings.Replace(entry, `"id"`, `"ID"`, 1) + `}]`, "", "with an id"},
		{"id not a string", `[` + strings.Replace(entry, `"a"`, `7`, 1) + `}]`, "", "with an id"},
		{"malformed id", `[` + strings.Replace(entry, `"a"`, `"`+long+`"`, 1) + `}]`, "", "must be 1 to 128"},
		{"long garbage entry", `[{"gpus":1,"x":"` + long + `"}]`, "", "with an id"},
		{"long value", `[` + strings.Replace(entry, `"w"`, `"`+long+`"`, 1) + `}]`, "not a workload name", ""},
		{"nested duplicate", `[` + entry + `,"pin":[{"k":1,"k":2}]}]`, "", "appears more than once"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, invalid, err := parseContractList([]byte(tc.body))
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), strings.Repeat("x", maxEcho+1)) {
					t.Errorf("the error echoes more than %d bytes of the feed: %d bytes", maxEcho, len(err.Error()))
				}
			case err != nil:
				t.Fatalf("poll failed: %v", err)
			default:
				if len(cs) != 1 || !strings.Contains(invalid[cs[0].ID], tc.invalid) {
					t.Fatalf("contracts %+v, invalid %v; want the entry refused for %q", cs, invalid, tc.invalid)
				}
				if strings.Contains(invalid[cs[0].ID], strings.Repeat("x", maxEcho+1)) {
					t.Errorf("the reason echoes more than %d bytes of the feed", maxEcho)
				}
			}
		})
	}
}

func TestClip(t *testing.T) {
	if got := clip(strings.Repeat("é", 40)); len(got) > maxEcho+len("…") || !strings.HasSuffix(got, "…") ||
		!strings.HasPrefix(got, "éé") || strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("clip cut a rune or kept too much: %q", got)
	}
	if got := clip("short"); got != "short" {
		t.Errorf("clip(short) = %q", got)
	}
}

// FuzzDecodeContract: whatever a client sends, the decoder does not panic,
// its errors stay short, and what it accepts is a valid contract that
// names each field once, spelled exactly. Seeds: testdata/fuzz/FuzzDecodeContract.
func FuzzDecodeContract(f *testing.F) {
	f.Add([]byte(validBody))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeContract(data, "fuzz")
		if err != nil {
			if n := len(err.Error()); n > 1024 {
				t.Fatalf("error of %d bytes for %d bytes of input", n, len(data))
			}
			return
		}
		if err := validateContract(c); err != nil {
			t.Fatalf("accepted an invalid contract: %v", err)
		}
		// Each top-level name once, exactly one of the contract's fields:
		// counted here independently of strictObject.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		for k := range m {
			if !containsString(contractFields, k) {
				t.Fatalf("accepted field %q", k)
			}
		}
		if n := countTopLevelKeys(t, data); n != len(m) {
			t.Fatalf("accepted %d members for %d distinct names: a duplicate", n, len(m))
		}
		// What it accepted means the same to encoding/json.
		var body contractBody
		if err := json.Unmarshal(data, &body); err != nil || body.GPUs == nil || *body.GPUs != c.GPUs {
			t.Fatalf("encoding/json reads it differently: %v %+v vs %+v", err, body, c)
		}
	})
}

func countTopLevelKeys(t *testing.T, data []byte) int {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	depth, n, wantKey := 0, 0, false
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
			wantKey = depth == 1
			continue
		}
		if depth == 1 && wantKey {
			n++
			wantKey = false
			// Skip the value: a scalar here, or a nested one the Delim case walks.
			continue
		}
		if depth == 1 {
			wantKey = true
		}
	}
}

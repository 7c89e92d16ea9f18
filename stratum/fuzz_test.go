package stratum_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"testing/iotest"

	"github.com/hashgate/proxyd/stratum"
)

// Real message shapes, as seeds for the fuzzers (also checked in under
// testdata/fuzz).
var seedLines = []string{
	`{"id": 1, "method": "mining.configure", "params": [["version-rolling", "minimum-difficulty"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2, "minimum-difficulty.value": 2048}]}`,
	`{"id": 2, "method": "mining.subscribe", "params": ["bmminer/2.0.0"]}`,
	`{"id": 2, "method": "mining.subscribe", "params": ["whatsminer/v1.0", "0a1b2c3d"]}`,
	`{"id": 1, "method": "mining.subscribe", "params": ["Braiins OS 22.08", null, "192.168.1.207:34255", null]}`,
	`{"id": 3, "method": "mining.authorize", "params": ["acct.worker1", "x"]}`,
	`{"params": ["acct.w", "bf", "0a1b2c3d", "504e86ed", "b2957c02"], "id": 4, "method": "mining.submit"}`,
	`{"id": 4, "method": "mining.submit", "params": ["acct.w", "bf", "0a1b2c3d", "504e86ed", "b2957c02", "1fffe000"]}`,
	`{"id": 0, "method": "mining.suggest_difficulty", "params": [1000]}`,
	`{"id": 5, "method": "mining.suggest_target", "params": ["00000000ffff0000000000000000000000000000000000000000000000000000"]}`,
	`{"id": 6, "method": "mining.extranonce.subscribe", "params": []}`,
	`{"id": "p", "method": "mining.ping", "params": []}`,
	`{"id": null, "method": "mining.set_difficulty", "params": [16383.75]}`,
	`{"id":null,"method":"mining.notify","params":["1d","8a6ac9e3fe15ca70f8995e21434cb64ac4d2b5e10001543b0000000000000000","0100000001","0affffffff",["4282357ab0a2f4e8e562c8c5eae1d63b559068f9072374b72e26b88ac841908f"],"20000000","17029a8a","679ac169",true]}`,
	`{"id": null, "method": "mining.set_version_mask", "params": ["1fffe000"]}`,
	`{"id": null, "method": "mining.set_extranonce", "params": ["08000002", 4]}`,
	`{"id": null, "method": "client.reconnect", "params": []}`,
	`{"id": null, "method": "client.reconnect", "params": ["stratum.example.com", "3333", 10]}`,
	`{"id": null, "method": "client.show_message", "params": ["maintenance"]}`,
	`{"id": 7, "method": "client.get_version", "params": []}`,
	`{"id": 4, "result": true, "error": null}`,
	`{"id": 4, "result": null, "error": [23, "Low difficulty share", null]}`,
	`{"id": 2, "result": [[["mining.set_difficulty", "b4b6"], ["mining.notify", "ae68"]], "08000002", 4], "error": null}`,
	`{"id": 1, "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "error": null}`,
	`{"id": 9, "method": "mining.multi_version", "params": [1]}`,
}

// decoders returns a fresh params value per method.
func decoders() []decoder {
	return []decoder{
		&stratum.Configure{}, &stratum.Subscribe{}, &stratum.Authorize{}, &stratum.Submit{},
		&stratum.SuggestDifficulty{}, &stratum.SuggestTarget{}, &stratum.ExtranonceSubscribe{}, &stratum.Ping{},
		&stratum.SetDifficulty{}, &stratum.Notify{}, &stratum.SetVersionMask{}, &stratum.SetExtranonce{},
		&stratum.Reconnect{}, &stratum.ShowMessage{}, &stratum.GetVersion{},
	}
}

// FuzzReader compares the reader with a plain reference splitter: the same
// lines, the same too-long verdict, and at a too-long line no more than the
// cap read past the line's start.
func FuzzReader(f *testing.F) {
	f.Add([]byte("a\nb\r\n\n"), uint16(0), uint8(0))
	for _, l := range seedLines {
		f.Add([]byte(l+"\n"+l+"\r\n"), uint16(600), uint8(1))
		f.Add([]byte(l+"\n"+l+"\r\n"+l+"\n"), uint16(600), uint8(0x80|16<<1|2))
	}
	f.Fuzz(func(t *testing.T, in []byte, max uint16, mode uint8) {
		var src io.Reader = bytes.NewReader(in)
		switch mode % 3 {
		case 1:
			src = iotest.OneByteReader(src)
		case 2:
			src = iotest.HalfReader(src)
		}
		counted := &countingSrc{r: src}
		r := stratum.NewReader(counted, int(max))
		if mode&0x80 != 0 { // the compact reader, from a small initial buffer
			r = stratum.NewCompactReader(counted, int(mode&0x7f)*4, int(max))
		}
		limit := r.MaxLineBytes()

		var got [][]byte
		var gotErr error
		for {
			line, err := r.ReadLine()
			if err != nil {
				gotErr = err
				break
			}
			got = append(got, append([]byte(nil), line...))
		}

		// Reference: split on '\n', drop one trailing '\r', skip blank lines;
		// a line whose bytes, terminator included, exceed the cap is too long.
		var want [][]byte
		tooLongAt, ambiguous := -1, false
		for pos := 0; pos < len(in); {
			i := bytes.IndexByte(in[pos:], '\n')
			seg, next := in[pos:], len(in)
			if i >= 0 {
				seg, next = in[pos:pos+i], pos+i+1
			}
			if (i >= 0 && i+1 > limit) || (i < 0 && len(seg) > limit) {
				tooLongAt = pos
				break
			}
			// An unterminated last line of exactly the cap fills the buffer:
			// whether EOF arrives with it depends on the source.
			ambiguous = i < 0 && len(seg) == limit
			seg = bytes.TrimSuffix(seg, []byte("\r"))
			if len(seg) > 0 {
				want = append(want, seg)
			}
			pos = next
		}
		switch {
		case ambiguous && errors.Is(gotErr, stratum.ErrLineTooLong):
			want = want[:len(want)-1] // the cap-length last line was refused
		case tooLongAt >= 0:
			if !errors.Is(gotErr, stratum.ErrLineTooLong) {
				t.Fatalf("error %v, want ErrLineTooLong for the line at %d", gotErr, tooLongAt)
			}
			if counted.n > tooLongAt+limit {
				t.Fatalf("read %d bytes, the too-long line starts at %d, cap %d", counted.n, tooLongAt, limit)
			}
		default:
			if gotErr != io.EOF {
				t.Fatalf("error %v, want io.EOF", gotErr)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("got %d lines %q, want %d %q", len(got), got, len(want), want)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("line %d: %q, want %q", i, got[i], want[i])
			}
		}
	})
}

type countingSrc struct {
	r io.Reader
	n int
}

func (c *countingSrc) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzParseMessage: the parser accepts only valid JSON objects, and every
// params type decodes without panicking; whatever decodes re-encodes to
// something that decodes to the same value.
func FuzzParseMessage(f *testing.F) {
	for _, l := range seedLines {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var m stratum.Message
		err := stratum.ParseMessage(line, &m)
		if err != nil {
			if !errors.Is(err, stratum.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !json.Valid(line) {
			t.Fatalf("accepted invalid JSON %q", line)
		}
		// The id echoes byte for byte.
		resp := stratum.AppendResult(nil, m.ID, nil)
		var back stratum.Message
		if err := stratum.ParseMessage(resp, &back); err != nil || back.ID != m.ID {
			t.Fatalf("id %s does not survive a response: %v", m.ID, err)
		}
		for _, d := range decoders() {
			if err := d.DecodeParams(m.Params); err != nil {
				if !errors.Is(err, stratum.ErrMalformed) {
					t.Fatalf("%v: error %v does not wrap ErrMalformed", d.Method(), err)
				}
				continue
			}
			enc := d.AppendParams(nil)
			again := reflect.New(reflect.TypeOf(d).Elem()).Interface().(decoder)
			if err := again.DecodeParams(enc); err != nil {
				t.Fatalf("%v: re-encoded %s does not decode: %v", d.Method(), enc, err)
			}
			if !reflect.DeepEqual(normalize(d), normalize(again)) {
				t.Fatalf("%v: round trip changed %+v to %+v", d.Method(), d, again)
			}
		}
		_, _ = stratum.ParseError(m.Error)
		_, _ = stratum.ParseSubscribeResult(m.Result)
		_, _ = stratum.ParseConfigureResult(m.Result)
		_, _ = stratum.ParseBoolResult(m.Result)
	})
}

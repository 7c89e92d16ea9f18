package share_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashgate/proxyd/stratum/share"
)

// FuzzVerify feeds arbitrary input to `proxyd share verify`'s logic: it must
// either report unusable input or produce a report that encodes as JSON.
func FuzzVerify(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"notify":null,"extranonce1":"","submit":[],"version_mask":null,"difficulty":1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := share.Read(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, share.ErrUnusable) {
				t.Fatalf("error %v does not wrap ErrUnusable", err)
			}
			return
		}
		rep, err := share.Verify(req, share.Options{})
		if err != nil {
			if !errors.Is(err, share.ErrUnusable) {
				t.Fatalf("error %v does not wrap ErrUnusable", err)
			}
			return
		}
		if rep.Valid != (rep.Reason == "") {
			t.Fatalf("valid %v with reason %q", rep.Valid, rep.Reason)
		}
		if _, err := json.Marshal(rep); err != nil {
			t.Fatalf("report does not encode: %v", err)
		}
	})
}

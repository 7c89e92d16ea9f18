package proxy

import (
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/internal/config" //nolint:depguard // tests write their setups in the operator's TOML, so they get its defaults and validation; production code never imports config
	"github.com/hashgate/proxyd/internal/events"
)

// testOptions parses a proxyd TOML document (so the tests get the
// operator's defaults and validation) and copies its [[server]] and [[pool]]
// tables into Options field by field, by name. The wiring
// (internal/components.ProxyOptions) does the same by hand; the test cannot
// import it (it imports this package).
func testOptions(t *testing.T, doc string) Options {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("test config: %v\n%s", err, doc)
	}
	o := Options{Log: zaptest.NewLogger(t), Events: events.New(0)}
	for _, s := range cfg.Servers {
		var so ServerOptions
		copyFields(t, &so, s)
		o.Servers = append(o.Servers, so)
	}
	for _, p := range cfg.Pools {
		var po PoolOptions
		copyFields(t, &po, p)
		o.Pools = append(o.Pools, po)
	}
	return o
}

// copyFields sets every field of *dst from src's field of the same name,
// converting config.Duration and config.SessionSize; a field of dst that
// src lacks fails the test.
func copyFields(t *testing.T, dst, src any) {
	t.Helper()
	d, s := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src)
	for i := 0; i < d.NumField(); i++ {
		name := d.Type().Field(i).Name
		sf := s.FieldByName(name)
		if !sf.IsValid() {
			t.Fatalf("%s.%s has no counterpart in %s", d.Type(), name, s.Type())
		}
		switch v := sf.Interface().(type) {
		case config.Duration:
			d.Field(i).Set(reflect.ValueOf(v.D()))
		case config.SessionSize:
			d.Field(i).SetInt(int64(v.Limit()))
		default:
			d.Field(i).Set(sf)
		}
	}
}

// liveBoard is a liveness board for tests: it records which loops are
// registered.
type liveBoard struct{ names map[string]time.Duration }

func (b *liveBoard) register(name string, maxAge time.Duration) (beat, done func()) {
	if b.names == nil {
		b.names = map[string]time.Duration{}
	}
	b.names[name] = maxAge
	return func() {}, func() { delete(b.names, name) }
}

package logkeep

import (
	"bytes"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestHas(t *testing.T) {
	tests := []struct {
		name   string
		fields []zapcore.Field
		want   bool
	}{
		{"none", nil, false},
		{"other fields", []zapcore.Field{zap.String("pool", "a"), zap.Skip()}, false},
		{"marked", []zapcore.Field{zap.String("pool", "a"), Field()}, true},
	}
	for _, tt := range tests {
		if got := Has(tt.fields); got != tt.want {
			t.Errorf("%s: Has = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestFieldIsNotEncoded(t *testing.T) {
	var buf bytes.Buffer
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.DebugLevel)
	zap.New(core).Info("failover", Field(), zap.String("pool", "a"))
	if bytes.Contains(buf.Bytes(), []byte(key)) {
		t.Fatalf("marker leaked into the output: %s", buf.String())
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"pool":"a"`)) {
		t.Fatalf("other fields lost: %s", buf.String())
	}
}

package proxy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestLogFieldsDoNotShadowZapKeys (issue 12, finding 16): no log field of
// this package may use a key zap writes itself. A field named "level" beside
// the entry's level made `"level":0` in JSON, and a filter on warn missed the
// line. Every zap field constructor call with a constant key is checked, in
// every non-test file of the package, so a line need not run to be checked.
func TestLogFieldsDoNotShadowZapKeys(t *testing.T) {
	enc := zap.NewProductionEncoderConfig()
	reserved := map[string]bool{"ts": true, "time": true} // internal/logging names the time "ts"
	for _, k := range []string{enc.TimeKey, enc.LevelKey, enc.NameKey, enc.CallerKey, enc.FunctionKey, enc.MessageKey, enc.StacktraceKey} {
		if k != "" {
			reserved[k] = true
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "zap" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true // zap.Error(err) and friends name their own key ("error")
			}
			key, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			if reserved[key] {
				t.Errorf("%s: zap.%s(%q, ...) collides with zap's own %q key; name it for what it is (say \"pool_%s\")",
					fset.Position(call.Pos()), sel.Sel.Name, key, key, key)
			}
			return true
		})
	}
	if checked < 50 {
		t.Fatalf("checked only %d field keys: the scan is not finding the package's log calls", checked)
	}
}

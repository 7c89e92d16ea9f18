package stratum_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/hashgate/proxyd/stratum"
)

func readAll(r *stratum.Reader) ([]string, error) {
	var lines []string
	for {
		line, err := r.ReadLine()
		if err != nil {
			return lines, err
		}
		lines = append(lines, string(line))
	}
}

func TestReaderLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"lf", "a\nb\n", []string{"a", "b"}},
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}},
		{"mixed", "a\r\nb\nc\r\n", []string{"a", "b", "c"}},
		{"blank lines skipped", "\n\r\na\n\n\r\nb\n", []string{"a", "b"}},
		{"last line unterminated", "a\nb", []string{"a", "b"}},
		{"last line unterminated crlf", "a\nb\r", []string{"a", "b"}},
		{"cr inside a line is kept", "a\rb\n", []string{"a\rb"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		for _, wrap := range []struct {
			name string
			fn   func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"byte by byte", iotest.OneByteReader},
			{"halves", iotest.HalfReader},
			{"data with EOF", iotest.DataErrReader},
		} {
			t.Run(tt.name+"/"+wrap.name, func(t *testing.T) {
				r := stratum.NewReader(wrap.fn(strings.NewReader(tt.in)), 0)
				got, err := readAll(r)
				if err != io.EOF {
					t.Fatalf("error %v, want io.EOF", err)
				}
				if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
					t.Fatalf("lines %q, want %q", got, tt.want)
				}
				if r.BytesRead() != uint64(len(tt.in)) {
					t.Fatalf("BytesRead %d, want %d", r.BytesRead(), len(tt.in))
				}
			})
		}
	}
}

func TestReaderLineCap(t *testing.T) {
	const max = 1024
	tests := []struct {
		name    string
		in      string
		want    []string
		tooLong bool
	}{
		{"content of max-1 plus lf fits", strings.Repeat("x", max-1) + "\n", []string{strings.Repeat("x", max-1)}, false},
		{"content of max-2 plus crlf fits", strings.Repeat("x", max-2) + "\r\n", []string{strings.Repeat("x", max-2)}, false},
		{"content of max is too long", strings.Repeat("x", max) + "\n", nil, true},
		{"too long after good lines", "ok\n" + strings.Repeat("y", 5000) + "\nnever\n", []string{"ok"}, true},
		{"many lines longer than the buffer in total", strings.Repeat(strings.Repeat("z", 300)+"\n", 20), func() []string {
			var l []string
			for range 20 {
				l = append(l, strings.Repeat("z", 300))
			}
			return l
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := stratum.NewReader(iotest.HalfReader(strings.NewReader(tt.in)), max)
			got, err := readAll(r)
			if tt.tooLong != errors.Is(err, stratum.ErrLineTooLong) {
				t.Fatalf("error %v, want too long: %v", err, tt.tooLong)
			}
			if len(got) != len(tt.want) || strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("got %d lines, want %d", len(got), len(tt.want))
			}
			if tt.tooLong {
				if _, err := r.ReadLine(); !errors.Is(err, stratum.ErrLineTooLong) {
					t.Fatalf("after a too-long line: %v, want the same error again", err)
				}
			}
		})
	}
}

// countingReader serves an endless line of 'x' and counts what was taken.
type countingReader struct{ n int }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	c.n += len(p)
	return len(p), nil
}

// TestReaderRefusesHugeLine: a 1 MiB (or endless) line is refused after at
// most the cap has been read.
func TestReaderRefusesHugeLine(t *testing.T) {
	for _, max := range []int{0, 512, 4096, 16 << 10} {
		src := &countingReader{}
		r := stratum.NewReader(io.LimitReader(src, 1<<20), max)
		_, err := r.ReadLine()
		if !errors.Is(err, stratum.ErrLineTooLong) {
			t.Fatalf("cap %d: error %v, want ErrLineTooLong", max, err)
		}
		if src.n > r.MaxLineBytes() {
			t.Fatalf("cap %d: read %d bytes before refusing", r.MaxLineBytes(), src.n)
		}
	}
}

func TestReaderDefaults(t *testing.T) {
	if got := stratum.NewReader(nil, 0).MaxLineBytes(); got != stratum.DefaultMaxLineBytes {
		t.Fatalf("default cap %d", got)
	}
	if got := stratum.NewReader(nil, 10).MaxLineBytes(); got != 512 {
		t.Fatalf("tiny cap raised to %d, want 512", got)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderErrors(t *testing.T) {
	boom := errors.New("connection reset")
	r := stratum.NewReader(io.MultiReader(strings.NewReader("a\npartial"), errReader{boom}), 0)
	if line, err := r.ReadLine(); err != nil || string(line) != "a" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if _, err := r.ReadLine(); err != boom {
		t.Fatalf("error %v, want the underlying error", err)
	}
	if _, err := r.ReadLine(); err != boom {
		t.Fatalf("error %v, want the underlying error again", err)
	}
	if _, err := stratum.NewReader(zeroReader{}, 0).ReadLine(); err != io.ErrNoProgress {
		t.Fatalf("endless (0, nil) reads: %v, want io.ErrNoProgress", err)
	}
}

func TestReaderLineAliasesBuffer(t *testing.T) {
	r := stratum.NewReader(bytes.NewReader([]byte("first\nsecond\n")), 0)
	a, _ := r.ReadLine()
	kept := string(a)
	b, _ := r.ReadLine()
	if kept != "first" || string(b) != "second" {
		t.Fatalf("%q %q", kept, b)
	}
}

// TestReaderGrowsLazily: a proxy holds one Reader per ASIC, so the buffer
// starts small and grows only for long lines, never past the cap.
func TestReaderGrowsLazily(t *testing.T) {
	long := strings.Repeat("a", 10_000)
	src := &sizeRecorder{r: strings.NewReader("short\n" + long + "\nafter\n")}
	r := stratum.NewReader(src, 16<<10)
	for _, want := range []string{"short", long, "after"} {
		line, err := r.ReadLine()
		if err != nil || string(line) != want {
			t.Fatalf("ReadLine = %d bytes, %v; want %d bytes", len(line), err, len(want))
		}
	}
	if src.maxRead > 16<<10 {
		t.Fatalf("a read asked for %d bytes, past the cap", src.maxRead)
	}
	if src.firstRead > 1024 {
		t.Fatalf("first read offered a %d-byte buffer, want a small one", src.firstRead)
	}
}

// sizeRecorder records the buffer sizes the Reader offers.
type sizeRecorder struct {
	r                  *strings.Reader
	firstRead, maxRead int
}

func (c *sizeRecorder) Read(p []byte) (int, error) {
	if c.firstRead == 0 {
		c.firstRead = len(p)
	}
	c.maxRead = max(c.maxRead, len(p))
	return c.r.Read(p)
}

// chunkReader hands out one chunk per Read (less if p is shorter; the rest
// comes next) and records the buffer size each Read was offered.
type chunkReader struct {
	chunks []string
	offers []int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.offers = append(c.offers, len(p))
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// TestCompactReader: the compact reader returns what NewReader returns
// (lines, and the same error for a line over the cap), offers the
// underlying reader its small initial buffer again once a long line or a
// burst has been handed out, and never offers more than the cap.
func TestCompactReader(t *testing.T) {
	const initial, max = 256, 1024
	long := strings.Repeat("L", max-1) // with its '\n', exactly the cap
	tests := []struct {
		name      string
		chunks    []string
		wantLines int
		tooLong   bool
		// shrunk: the read after everything was handed out is offered
		// the initial buffer (false where the stream ends mid-growth).
		shrunk bool
	}{
		{"short lines stay in the initial buffer", []string{"a\n", "b\r\n", "c\n"}, 3, false, true},
		{"a line at the cap, in pieces, then back", []string{long[:300], long[300:900], long[900:] + "\n", "next\n"}, 2, false, true},
		{"a burst of lines in one read grows, then shrinks", []string{strings.Repeat(strings.Repeat("b", 299)+"\n", 3)}, 3, false, true},
		{"a partial line is kept across reads", []string{strings.Repeat("p", 300), "p\nshort\n"}, 2, false, true},
		{"a line over the cap fails as with NewReader", []string{"ok\n", strings.Repeat("X", max) + "\n", "never\n"}, 1, true, false},
		{"an unterminated last line still counts", []string{"x\n", strings.Repeat("u", 400)}, 2, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &chunkReader{chunks: append([]string(nil), tt.chunks...)}
			got, err := readAll(stratum.NewCompactReader(src, initial, max))
			want, wantErr := readAll(stratum.NewReader(&chunkReader{chunks: append([]string(nil), tt.chunks...)}, max))
			if strings.Join(got, "|") != strings.Join(want, "|") || len(got) != tt.wantLines {
				t.Fatalf("got %d lines, NewReader %d, want %d", len(got), len(want), tt.wantLines)
			}
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("error %v, NewReader's %v", err, wantErr)
			}
			if tt.tooLong != errors.Is(err, stratum.ErrLineTooLong) {
				t.Fatalf("error %v, want too long: %v", err, tt.tooLong)
			}
			if src.offers[0] != initial {
				t.Fatalf("first read offered %d bytes, want %d", src.offers[0], initial)
			}
			for _, o := range src.offers {
				if o > max {
					t.Fatalf("a read was offered %d bytes, past the cap %d", o, max)
				}
			}
			if last := src.offers[len(src.offers)-1]; tt.shrunk && last != initial {
				t.Fatalf("offers %v: the last read was offered %d bytes, want the initial %d", src.offers, last, initial)
			}
		})
	}
}

func TestCompactReaderSizes(t *testing.T) {
	tests := []struct{ initial, max, want int }{
		{256, 1024, 256},
		{0, 1024, 64},      // raised to a sane floor
		{4096, 1024, 1024}, // never above the cap
		{100, 0, 100},      // default cap
	}
	for _, tt := range tests {
		src := &chunkReader{}
		_, _ = stratum.NewCompactReader(src, tt.initial, tt.max).ReadLine()
		if src.offers[0] != tt.want {
			t.Errorf("NewCompactReader(%d, %d): first read offered %d, want %d", tt.initial, tt.max, src.offers[0], tt.want)
		}
	}
}

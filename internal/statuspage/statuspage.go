package statuspage

import (
	"embed"
	"net/http"
)

//go:embed assets/index.html assets/app.js assets/style.css
var assets embed.FS

// csp allows only this origin: the page works offline and cannot be made to
// send the token elsewhere or be framed by another site.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register mounts the page on mux: GET / (exactly), GET /ui/app.js and
// GET /ui/style.css. Other paths are left to the mux's other handlers.
func Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", file("assets/index.html", "text/html; charset=utf-8"))
	mux.Handle("GET /ui/app.js", file("assets/app.js", "text/javascript; charset=utf-8"))
	mux.Handle("GET /ui/style.css", file("assets/style.css", "text/css; charset=utf-8"))
}

func file(name, contentType string) http.Handler {
	body, err := assets.ReadFile(name)
	if err != nil {
		// The names are fixed and embedded at build time: a miss is a build bug.
		panic("statuspage: " + name + " is not embedded: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	})
}

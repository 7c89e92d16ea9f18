// Command deb builds proxyd's Debian package with nfpm used as a library.
//
// It is its own Go module so that nfpm and its dependencies never enter the
// daemon's module graph or binary. `make deb` runs it after `make build`:
//
//	go run . --binary ../../bin/proxyd --version 1.2.3 --out ../../dist
//
// The package holds the binary, the systemd unit, sysusers and tmpfiles
// entries, /etc/proxyd/proxyd.toml as a conffile (with api_token_file set to
// /etc/proxyd/api-token), the Prometheus rules and the Grafana dashboard under
// /usr/share/proxyd, and maintainer scripts (scripts/) that create the user
// and a random API token, and stop and disable the unit on removal. It does
// not build the binary, sign the package or publish it.
package main

// Package monitoring holds the tests that put proxyd's shipped monitoring in
// front of the real tools an operator runs: promtool checks and unit-tests
// configs/prometheus/proxyd.rules.yml, and a real Prometheus server scrapes a
// running `proxyd demo`, loads the rules and answers every expression of the
// Grafana dashboard in configs/grafana/proxyd.json.
//
// It has no non-test code. The tools come from Debian's prometheus package
// (.ci/run installs it). Without them the tests skip on a developer's machine
// and fail in CI (CI set), so a missing install never passes silently.
package monitoring

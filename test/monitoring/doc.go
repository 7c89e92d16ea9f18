// Package monitoring holds the tests that put what an operator looks at in
// front of the real tools the operator runs:
//   - promtool checks and unit-tests configs/prometheus/proxyd.rules.yml;
//   - a real Prometheus server scrapes a running `proxyd demo`, loads the
//     rules and answers every expression of the Grafana dashboard in
//     configs/grafana/proxyd.json;
//   - headless Chromium loads the status page (internal/statuspage) of a
//     running demo, with and without the API token, and saves a screenshot
//     to test-artifacts/statuspage.png.
//
// It has no non-test code. The tools come from Debian's prometheus and
// chromium packages (.ci/run installs them). Without them the tests skip on
// a developer's machine and fail in CI (CI set), so a missing install never
// passes silently.
package monitoring

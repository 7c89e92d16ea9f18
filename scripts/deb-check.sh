#!/usr/bin/env bash
# Inspects, installs, checks and purges the .deb that `make deb` built, on
# this machine (needs root; CI runs it). Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "deb-check: needs root (dpkg -i)" >&2; exit 1; }
(cd packaging/deb && go vet . && go test -count=1 .)
deb=$(ls -t dist/proxyd_*.deb | head -n 1)
echo "== $deb"
dpkg-deb -I "$deb"
dpkg-deb -c "$deb"
for f in ./usr/bin/proxyd ./usr/lib/systemd/system/proxyd.service ./usr/lib/sysusers.d/proxyd.conf \
	./usr/lib/tmpfiles.d/proxyd.conf ./etc/proxyd/proxyd.toml ./usr/share/proxyd/grafana/proxyd.json \
	./usr/share/proxyd/prometheus/proxyd.rules.yml; do
	dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx "$f" || { echo "deb-check: $f missing from the package" >&2; exit 1; }
done
dpkg-deb -f "$deb" Conffiles >/dev/null 2>&1 || true
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/proxyd/proxyd.toml ||
	{ echo "deb-check: /etc/proxyd/proxyd.toml is not a conffile" >&2; exit 1; }
if dpkg -s proxyd >/dev/null 2>&1; then
	echo "deb-check: proxyd is already installed here; refusing to touch it" >&2
	exit 1
fi
trap 'dpkg --purge proxyd >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb"
getent passwd proxyd >/dev/null || { echo "deb-check: the postinst created no proxyd user" >&2; exit 1; }
stat -c '%a %U:%G %n' /etc/proxyd /etc/proxyd/proxyd.toml /etc/proxyd/api-token
[ "$(stat -c '%a %U:%G' /etc/proxyd/api-token)" = "640 root:proxyd" ] ||
	{ echo "deb-check: /etc/proxyd/api-token must be 0640 root:proxyd" >&2; exit 1; }
[ "$(wc -l </etc/proxyd/api-token)" = 1 ] && [ "$(tr -d '\n' </etc/proxyd/api-token | wc -c)" = 64 ] ||
	{ echo "deb-check: the generated token is not one line of 64 hex digits" >&2; exit 1; }
/usr/bin/proxyd version
/usr/bin/proxyd check-config --config /etc/proxyd/proxyd.toml
systemd-analyze verify /usr/lib/systemd/system/proxyd.service
echo "systemd-analyze verify (installed unit): ok"
# Reinstall keeps an edited conffile and the existing token.
tok=$(cat /etc/proxyd/api-token)
sed -i 's/^shutdown_timeout = "30s"/shutdown_timeout = "31s"/' /etc/proxyd/proxyd.toml
dpkg -i --force-confold "$deb" >/dev/null
grep -q '^shutdown_timeout = "31s"' /etc/proxyd/proxyd.toml || { echo "deb-check: reinstall replaced the edited config" >&2; exit 1; }
[ "$(cat /etc/proxyd/api-token)" = "$tok" ] || { echo "deb-check: reinstall replaced the API token" >&2; exit 1; }
dpkg --purge proxyd
trap - EXIT
for p in /usr/bin/proxyd /etc/proxyd /usr/lib/systemd/system/proxyd.service /var/lib/proxyd; do
	[ ! -e "$p" ] || { echo "deb-check: $p left behind after purge" >&2; exit 1; }
done
echo "deb-check: $deb installs, validates and purges cleanly"

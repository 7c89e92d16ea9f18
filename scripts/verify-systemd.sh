#!/usr/bin/env bash
# Verifies systemd/proxyd.service with systemd-analyze. The unit names
# /usr/bin/proxyd, which a build machine does not have installed, so the check
# runs on a copy whose ExecStart points at the freshly built binary; every
# other line is verified as shipped. Also prints the unit's exposure score.
set -euo pipefail
bin=${1:?usage: verify-systemd.sh PATH_TO_BUILT_PROXYD}
if ! command -v systemd-analyze >/dev/null; then
	echo "verify-systemd: systemd-analyze not installed (apt-get install systemd)" >&2
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$bin" "$tmp/proxyd"
sed "s#/usr/bin/proxyd#$tmp/proxyd#g" systemd/proxyd.service >"$tmp/proxyd.service"
systemd-analyze verify "$tmp/proxyd.service"
# The resource limits that contain a leak in proxyd's own cgroup (README,
# "systemd install and hardening") must not be dropped by an edit.
for key in MemoryMax TasksMax LimitNOFILE; do
	if ! grep -q "^$key=" systemd/proxyd.service; then
		echo "verify-systemd: systemd/proxyd.service lacks $key=" >&2
		exit 1
	fi
done
echo "systemd-analyze verify systemd/proxyd.service: ok"
# Exposure score (informational; needs systemd >= 250 for --offline).
systemd-analyze security --offline=true "$tmp/proxyd.service" 2>/dev/null | tail -n 1 || true

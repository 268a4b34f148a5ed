#!/bin/sh
# The OCI registry the fleet tests push to: the CNCF distribution registry from Debian's
# docker-registry package, installed when missing and the machine allows it (root with
# apt, as in CI). The tests start it themselves on a loopback port; the package's own
# service is masked first, and a policy-rc.d refuses service starts during the install,
# so it is never enabled or started on port 5000. (The S3 server, moto, is a Python
# package of the dev extra.)
set -u
if command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: docker-registry is missing and could not be installed: the OCI tests will fail" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
mkdir -p /etc/systemd/system
ln -sf /dev/null /etc/systemd/system/docker-registry.service
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
fi
apt-get install -y -q --no-install-recommends docker-registry ||
  { apt-get update -q && apt-get install -y -q --no-install-recommends docker-registry; }
status=$?
[ -n "$policy" ] && rm -f "$policy"
if [ "$status" != 0 ]; then
  echo "warning: docker-registry could not be installed: the OCI tests will fail" >&2
fi
exit 0

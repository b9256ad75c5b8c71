#!/usr/bin/env bash
# Installs the system packages punchgate's tests and demo need, only when missing.
# mosquitto: the real MQTT broker the tests and the demo start on a private loopback port.
# socat:     spare pseudo-terminal plumbing for serial tests and manual experiments.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "punchgate: missing system packages: ${missing[*]}; run as root or install them with apt-get" >&2
    exit 1
fi
echo "punchgate: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system-wide mosquitto on port 1883 when it can; we never use it.

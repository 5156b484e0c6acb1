#!/usr/bin/env bash
# Installs the system programs the mesh's demo and tests run for real, when missing:
# redis-server (streams, broker, results), prometheus + promtool (alert rule tests,
# panel-query test) and prometheus-alertmanager + amtool (`amtool check-config`, the
# detection benchmark), from Debian's packages. Does nothing when all are present.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${1:-}" = "--test" ]; then
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing from Debian's packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages may start their own services on standard ports; the mesh never uses them.

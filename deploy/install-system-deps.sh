#!/usr/bin/env bash
# Install what the test suite needs from the system, if it is missing: MariaDB and Redis servers
# (the tests start their own throwaway instances; nothing is configured system-wide) and the
# client headers mysqlclient compiles against. Uses apt as root or through sudo; otherwise says
# what to install.
set -euo pipefail

missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || missing+=(libmariadb-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# The browser test of the back office (Debian's Chromium; browser downloads do not work here).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# The deployment-config checks and the native stack test.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# Alertmanager's config check (amtool), backup encryption (age) and off-host copies (rsync).
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v age >/dev/null 2>&1 || missing+=(age)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
else
    echo "The test suite needs these Debian/Ubuntu packages: ${missing[*]}" >&2
    echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "Installing ${missing[*]} …"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

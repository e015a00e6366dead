#!/bin/sh
# Installs the Debian 12 packages duet builds and tests with (apt-get update first), and any
# packages named as arguments (scripts/demo.sh asks for npm this way). Packages already present
# are not fetched again, so a second run is quick and needs no network.
set -eu
packages="build-essential autoconf automake libtool pkg-config libconfig-dev check \
libsubunit-dev libdnnl-dev libhwloc-dev libjansson-dev libmicrohttpd-dev curl libpcre2-dev libutf8proc-dev valgrind clang-format git clang libclang-rt-14-dev python3-jinja2 python3-venv python3-pip python3-setuptools python3-wheel $*"
missing=
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && { echo "install-deps: all packages present"; exit 0; }
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "install-deps: installing$missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing

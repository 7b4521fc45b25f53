#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs (Python deps,
# etcd, ZooKeeper, dig, NSD), then runs lint, types, unit, conformance, integration and fault
# tests. The stores are started by the test harness on free loopback ports and stopped
# when the run ends; a store that cannot start fails the run (never a skip).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || need_apt+=(zookeeper)
command -v dig >/dev/null || need_apt+=(dnsutils)
[ -x /usr/sbin/nsd ] || command -v nsd >/dev/null || need_apt+=(nsd)  # a real AXFR secondary
command -v ip >/dev/null || need_apt+=(iproute2)
command -v openssl >/dev/null || need_apt+=(openssl)  # throwaway PKI for the TLS tests
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== installing idstore and its test dependencies"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
ruff check idstore tests benchmarks
echo "== mypy"
mypy

# tests/integration/test_examples.py makes (once) and reuses the cached virtualenv of
# real TensorFlow and PyTorch through scripts/framework-venv.sh.
echo "== pytest"
exec python3 -m pytest -p no:cacheprovider -ra "$@"

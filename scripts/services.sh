#!/usr/bin/env bash
# Make sure the real PostgreSQL and Redis that the test suite talks to are installed and running, and the network
# tools the partition test needs (iproute2, nftables) are installed.
# Installs them from Debian's packages when missing, starts them when stopped, and FAILS (never skips) when a
# store cannot be brought up: the conformance suite must prove every store.
set -euo pipefail

PGHOST=127.0.0.1 PGPORT=5432 REDIS_PORT=6379
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
if ! command -v pg_isready >/dev/null 2>&1; then
  echo "services: installing PostgreSQL"; apt_install postgresql postgresql-client
fi
if ! pg_up; then
  echo "services: starting PostgreSQL"
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -z "$version" ]; then echo "services: no PostgreSQL cluster found under /etc/postgresql" >&2; exit 1; fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "services: PostgreSQL is not reachable on $PGHOST:$PGPORT — the suite needs it" >&2; exit 1; }
if ! psql -h "$PGHOST" -p "$PGPORT" -U postgres -d test -qtAc 'select 1' >/dev/null 2>&1; then
  echo "services: creating database 'test'"
  psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc 'CREATE DATABASE test' \
    || as_root -u postgres psql -qc 'CREATE DATABASE test'
fi
psql -h "$PGHOST" -p "$PGPORT" -U postgres -d test -qtAc 'select 1' >/dev/null \
  || { echo "services: cannot connect to postgresql://postgres@$PGHOST:$PGPORT/test (trust auth expected)" >&2; exit 1; }

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
if ! command -v redis-server >/dev/null 2>&1; then
  echo "services: installing Redis"; apt_install redis-server
fi
if ! redis_up; then
  echo "services: starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
fi
redis_up || { echo "services: Redis is not reachable on 127.0.0.1:$REDIS_PORT — the suite needs it" >&2; exit 1; }
# The partition test (tests/faults/test_partition.py) builds worker hosts from network namespaces and cuts them off
# with an nftables rule inside a host's namespace: it needs iproute2 and nftables (and root, as CI has).
if ! command -v ip >/dev/null 2>&1; then echo "services: installing iproute2"; apt_install iproute2; fi
if ! command -v nft >/dev/null 2>&1; then echo "services: installing nftables"; apt_install nftables; fi
echo "services: PostgreSQL and Redis are up; ip and nft are installed"

#!/usr/bin/env bash
# Debian's PostgreSQL server with pgvector built from Debian's own source package (pgvector is not packaged for
# bookworm, the source package of a newer Debian release builds against bookworm's server headers as it is).
# Idempotent: does nothing when the server and a pgvector >= 0.7 are installed. Needs root (apt, make install).
# Usage: scripts/install-pgvector.sh [build-folder]      (Makefile target: make postgres)
set -euo pipefail
BUILD=${1:-build/pgvector}
SUITE=${PGVECTOR_SUITE:-trixie}   # the Debian release whose pgvector source package is built (0.8.0 in trixie)

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
have_vector() {
  local bin; bin=$(pg_bindir) || return 1
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || return 1
  local share; share=$("$bin/pg_config" --sharedir)
  compgen -G "$share/extension/vector--0.[7-9]*.sql" >/dev/null || compgen -G "$share/extension/vector--[1-9]*.sql" >/dev/null
}
if have_vector; then echo "PostgreSQL with pgvector >= 0.7: $(pg_bindir)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "PostgreSQL with pgvector >= 0.7 is missing; as root run $0, or install postgresql and postgresql-<major>-pgvector" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql postgresql-common dpkg-dev build-essential >/dev/null
MAJOR=$(basename "$(dirname "$(pg_bindir)")")
apt-get install -y -qq "postgresql-server-dev-$MAJOR" >/dev/null

# Fetch the source package with apt (signature-checked against Debian's archive keys) from a private source list.
mkdir -p "$BUILD/lists/partial"
echo "deb-src http://deb.debian.org/debian $SUITE main" >"$BUILD/sources.list"
APT=(-o "Dir::Etc::SourceList=$PWD/$BUILD/sources.list" -o Dir::Etc::SourceParts=/nonexistent -o "Dir::State::Lists=$PWD/$BUILD/lists")
apt-get "${APT[@]}" update -qq
rm -rf "$BUILD"/pgvector-*/
(cd "$BUILD" && apt-get "${APT[@]}" source -qq pgvector 2>&1 | grep -v "unsandboxed" || true)
SRC=$(ls -d "$BUILD"/pgvector-*/ | head -1)
# `make test DATA=...` passes DATA down through MAKEFLAGS, and PGXS reads DATA as its list of files to install
unset MAKEFLAGS MFLAGS MAKELEVEL DATA
make -s -C "$SRC" PG_CONFIG="/usr/lib/postgresql/$MAJOR/bin/pg_config"
make -s -C "$SRC" PG_CONFIG="/usr/lib/postgresql/$MAJOR/bin/pg_config" install
have_vector && echo "built and installed pgvector from Debian's source package ($SRC) for PostgreSQL $MAJOR"

#!/usr/bin/env bash
# Install PostgreSQL's server binaries (initdb, pg_ctl) for the store tests, when they are missing.
# Idempotent; does not start Debian's cluster service: the tests start their own throwaway cluster.
set -euo pipefail

if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d 101: packages may not start services while they install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
fi
trap 'if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
apt-get install -y -qq postgresql >/dev/null

compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || {
    echo "install-postgres: postgresql installed but no /usr/lib/postgresql/*/bin/initdb" >&2
    exit 1
}

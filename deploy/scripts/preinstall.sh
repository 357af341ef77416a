#!/bin/sh
# Create the mcpgw system user before the files are unpacked, so the service
# has a stable owner for /var/lib/mcpgw across upgrades and reinstalls. The
# package also ships /usr/lib/sysusers.d/mcpgw.conf describing the same user.
set -e
if ! getent passwd mcpgw >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/mcpgw --no-create-home \
		--shell /usr/sbin/nologin --comment "mcpgw gateway" mcpgw
fi

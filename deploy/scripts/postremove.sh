#!/bin/sh
# Removal keeps /var/lib/mcpgw (the state database and, by default, the vault
# key) and the mcpgw user even on purge: deleting them would destroy every
# stored credential. Delete them by hand once backed up.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
case "$1" in
purge)
	if [ -d /var/lib/mcpgw ]; then
		echo "mcpgw: kept /var/lib/mcpgw and the mcpgw user; remove them by hand once backed up"
	fi
	;;
esac

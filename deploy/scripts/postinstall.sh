#!/bin/sh
# Reload systemd so it sees the unit. The service is neither enabled nor
# started here: review /etc/mcpgw/mcpgw.env first, then
#   systemctl enable --now mcpgw
set -e
# systemd makes the state directory on start (StateDirectory=); making it now
# lets `mcpgw init` and the admin CLI use it before the first start.
if [ ! -d /var/lib/mcpgw ]; then
	install -d -o mcpgw -g mcpgw -m 0700 /var/lib/mcpgw
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# An upgrade restarts a running gateway onto the new binary.
	if systemctl is-active --quiet mcpgw.service; then
		systemctl try-restart mcpgw.service || true
	fi
fi
if [ ! -e /var/lib/mcpgw/vault.key ] && [ ! -e /var/lib/mcpgw/data ]; then
	echo "mcpgw: review /etc/mcpgw/mcpgw.env, then: systemctl enable --now mcpgw"
	echo "mcpgw: the first start creates /var/lib/mcpgw/vault.key: back it up"
fi

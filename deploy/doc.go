// Package deploy holds what installs mcpgw on a host: the systemd unit
// (systemd/mcpgw.service), the default environment file (mcpgw.env), the
// package scripts that create the mcpgw user (scripts/), and the nfpm
// configuration that builds the .deb and .rpm (nfpm.yaml, run by
// scripts/package.sh), and the Grafana dashboard (grafana/mcpgw.json) and
// Prometheus alert rules (prometheus/alerts.yml) it installs under
// /usr/share/mcpgw; node's tests check that every metric they use exists. It has no Go code; its tests check a built .deb.
package deploy

package deploy_test

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/tcptest"
)

// debEnv names the .deb under test. Building it needs nfpm from the Go
// module proxy, which a test must not fetch, so .ci/run builds it first with
// scripts/package.sh and passes it here.
const debEnv = "MCPGW_TEST_DEB"

func debPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv(debEnv)
	if p == "" {
		t.Skipf("no package to check: run scripts/package.sh, then %s=dist/mcpgw_<version>_<arch>.deb go test ./deploy/", debEnv)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed: apt-get install dpkg")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("%s=%s: %v", debEnv, p, err)
	}
	return abs
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// TestDebContents checks that the package holds the binary, the unit, the
// environment file as a conffile and the user set-up, and that what it
// holds works together: the binary runs, the environment file names only
// variables serve reads, and the unit verifies.
func TestDebContents(t *testing.T) {
	deb := debPath(t)

	modes := map[string]string{} // path in the package → mode and owner
	sc := bufio.NewScanner(strings.NewReader(run(t, "dpkg-deb", "-c", deb)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		modes[strings.TrimPrefix(f[len(f)-1], ".")] = f[0] + " " + f[1]
	}
	for path, want := range map[string]string{
		"/usr/bin/mcpgw":                         "-rwxr-xr-x root/root",
		"/lib/systemd/system/mcpgw.service":      "-rw-r--r-- root/root",
		"/etc/mcpgw/mcpgw.env":                   "-rw-r----- root/root",
		"/usr/lib/sysusers.d/mcpgw.conf":         "-rw-r--r-- root/root",
		"/usr/share/mcpgw/grafana/mcpgw.json":    "-rw-r--r-- root/root",
		"/usr/share/mcpgw/prometheus/alerts.yml": "-rw-r--r-- root/root",
	} {
		if got := modes[path]; got != want {
			t.Errorf("%s in the package: %q, want %q", path, got, want)
		}
	}

	if got, want := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Package")), "mcpgw"; got != want {
		t.Errorf("Package=%q, want %q", got, want)
	}
	if got, want := strings.TrimSpace(run(t, "dpkg-deb", "-I", deb, "conffiles")), "/etc/mcpgw/mcpgw.env"; got != want {
		t.Errorf("conffiles=%q, want %q", got, want)
	}
	preinst := run(t, "dpkg-deb", "-I", deb, "preinst")
	if !strings.Contains(preinst, "useradd --system --user-group --home-dir /var/lib/mcpgw") {
		t.Errorf("preinst does not create the mcpgw system user:\n%s", preinst)
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		run(t, "dpkg-deb", "-I", deb, script)
	}

	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	bin := filepath.Join(root, "usr/bin/mcpgw")

	version := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))
	// "mcpgw <version>, commit <commit>, built <date>, <go version>"
	if got, want := strings.TrimSpace(run(t, bin, "--version")), "mcpgw "+version+", commit "; !strings.HasPrefix(got, want) {
		t.Errorf("mcpgw --version=%q, want it to start %q", got, want)
	}

	serveHelp := run(t, bin, "serve", "--help")
	env, err := os.ReadFile(filepath.Join(root, "etc/mcpgw/mcpgw.env"))
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`(?m)^#?(MCPGW_[A-Z_]+)=`).FindAllStringSubmatch(string(env), -1)
	if len(names) < 30 {
		t.Fatalf("mcpgw.env names %d variables, want one per serve flag", len(names))
	}
	for _, m := range names {
		// The passphrase is read from the environment alone, not from a flag.
		if m[1] != "MCPGW_VAULT_PASSPHRASE" && !strings.Contains(serveHelp, "$"+m[1]+"]") && !strings.Contains(serveHelp, "$"+m[1]+",") {
			t.Errorf("mcpgw.env sets %s, which mcpgw serve does not read", m[1])
		}
	}

	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/mcpgw.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"User=mcpgw",
		"ExecStart=/usr/bin/mcpgw serve",
		"WorkingDirectory=/var/lib/mcpgw",
		"Environment=MCPGW_DATA_DIR=/var/lib/mcpgw/data",
		"Environment=MCPGW_VAULT_KEY=/var/lib/mcpgw/vault.key",
		"EnvironmentFile=-/etc/mcpgw/mcpgw.env",
		"StateDirectory=mcpgw",
		"Restart=on-failure",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"CapabilityBoundingSet=",
		"SystemCallFilter=@system-service",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `$`).Match(unit) {
			t.Errorf("unit lacks the line %q", line)
		}
	}
	// SIGKILL must not cut the drain short: serve waits --shutdown-timeout
	// (10s by default) for sessions, then closes raft and storage.
	if m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)s$`).FindSubmatch(unit); m == nil {
		t.Errorf("unit has no TimeoutStopSec=<n>s")
	} else if n, _ := strconv.Atoi(string(m[1])); n < 20 {
		t.Errorf("TimeoutStopSec=%ds, want at least 20s (the default drain is 10s)", n)
	}

	t.Run("systemd-analyze", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Skip("systemd-analyze not installed: apt-get install systemd")
		}
		// verify checks that ExecStart exists: point it at the packaged binary.
		dir := t.TempDir()
		unitCopy := filepath.Join(dir, "mcpgw.service")
		if err := os.WriteFile(unitCopy, bytes.ReplaceAll(unit, []byte("/usr/bin/mcpgw"), []byte(bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", unitCopy).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
		out, err = exec.Command("systemd-analyze", "security", "--offline=true", unitCopy).CombinedOutput()
		if err != nil {
			t.Skipf("systemd-analyze security --offline not supported here: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`Overall exposure level for mcpgw.service: ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no exposure level in systemd-analyze security output:\n%s", out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("systemd-analyze security: exposure %.1f (0 best, 10 worst)", score)
		if score > 2.0 {
			t.Errorf("exposure %.1f, want at most 2.0: a hardening setting was lost\n%s", score, out)
		}
	})
}

// TestDebInstall installs the package into this machine, as CI (root on
// Debian) allows, starts the gateway once the way the unit does, and purges
// the package again. It refuses to touch a machine where mcpgw is already
// installed.
func TestDebInstall(t *testing.T) {
	deb := debPath(t)
	if os.Geteuid() != 0 {
		t.Skip("installing the package needs root")
	}
	for _, tool := range []string{"dpkg", "getent", "userdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: the install check needs a Debian system", tool)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "mcpgw").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skip("mcpgw is installed on this machine already: not replacing it")
	}
	if _, err := os.Stat("/usr/bin/mcpgw"); err == nil {
		t.Skip("/usr/bin/mcpgw exists already: not replacing it")
	}
	_, userErr := exec.Command("getent", "passwd", "mcpgw").Output()
	userExisted := userErr == nil
	_, stateErr := os.Stat("/var/lib/mcpgw")
	stateExisted := stateErr == nil

	purge := func() {
		t.Helper()
		if out, err := exec.Command("dpkg", "--purge", "mcpgw").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge mcpgw: %v\n%s", err, out)
		}
	}
	purged := false
	t.Cleanup(func() {
		if !purged {
			purge()
		}
		// Removal keeps the user and the state on purge, by design; undo
		// here only what this test made.
		if !stateExisted {
			os.RemoveAll("/var/lib/mcpgw")
		}
		if !userExisted {
			exec.Command("userdel", "mcpgw").Run()
			exec.Command("groupdel", "mcpgw").Run()
		}
	})
	run(t, "dpkg", "-i", deb)

	if got, want := strings.TrimSpace(run(t, "/usr/bin/mcpgw", "--version")), "mcpgw "+strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))+", commit "; !strings.HasPrefix(got, want) {
		t.Errorf("/usr/bin/mcpgw --version=%q, want it to start %q", got, want)
	}
	run(t, "/usr/bin/mcpgw", "--help")
	pw := strings.Split(strings.TrimSpace(run(t, "getent", "passwd", "mcpgw")), ":")
	if len(pw) != 7 || pw[5] != "/var/lib/mcpgw" || pw[6] != "/usr/sbin/nologin" {
		t.Errorf("mcpgw user: %q, want home /var/lib/mcpgw and shell /usr/sbin/nologin", pw)
	}
	if uid, _ := strconv.Atoi(pw[2]); uid == 0 || uid >= 1000 {
		t.Errorf("mcpgw uid %d, want a system uid", uid)
	}
	if got := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "mcpgw"); !strings.Contains(got, "/etc/mcpgw/mcpgw.env ") {
		t.Errorf("installed conffiles %q lack /etc/mcpgw/mcpgw.env", got)
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/mcpgw.service").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("systemd-analyze verify of the installed unit: %v\n%s", err, out)
		}
	}

	t.Run("first start as the service user", func(t *testing.T) { firstStart(t) })

	purged = true
	purge()
	for _, p := range []string{"/usr/bin/mcpgw", "/lib/systemd/system/mcpgw.service", "/etc/mcpgw/mcpgw.env"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s is left after purge", p)
		}
	}
}

// firstStart runs the installed gateway as the unit would on first start:
// as the mcpgw user, in the state directory systemd makes, with the unit's
// Environment= lines. It checks that the service user can create the vault
// key and the data dir there, and that SIGTERM stops it cleanly.
func firstStart(t *testing.T) {
	uid, _ := strconv.Atoi(strings.TrimSpace(run(t, "id", "-u", "mcpgw")))
	gid, _ := strconv.Atoi(strings.TrimSpace(run(t, "id", "-g", "mcpgw")))
	// StateDirectory=mcpgw with StateDirectoryMode=0700.
	if err := os.MkdirAll("/var/lib/mcpgw", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown("/var/lib/mcpgw", uid, gid); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("/lib/systemd/system/mcpgw.service")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/var/lib/mcpgw"}
	for _, m := range regexp.MustCompile(`(?m)^Environment=(.*)$`).FindAllSubmatch(unit, -1) {
		env = append(env, string(m[1]))
	}
	admin := tcptest.FreeAddr(t)
	cmd := exec.Command("/usr/bin/mcpgw", "serve",
		"--http", tcptest.FreeAddr(t), "--admin", admin, "--quic", "", "--raft", tcptest.FreeAddr(t))
	cmd.Dir = "/var/lib/mcpgw"
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("mcpgw serve exited before it was healthy: %v\n%s", err, logs.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mcpgw serve not healthy on %s after 30s:\n%s", admin, logs.Bytes())
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}

	for _, p := range []string{"/var/lib/mcpgw/vault.key", "/var/lib/mcpgw/data/admin.token", "/var/lib/mcpgw/data/state.db"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("after first start: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := fi.Mode().Perm(); got != 0o600 || int(st.Uid) != uid {
			t.Errorf("%s: mode %04o uid %d, want 0600 owned by mcpgw (%d)", p, got, st.Uid, uid)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("mcpgw serve after SIGTERM: %v\n%s", err, logs.Bytes())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("mcpgw serve still running 30s after SIGTERM (the unit's TimeoutStopSec):\n%s", logs.Bytes())
	}
}

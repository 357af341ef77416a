package bench

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParseProcFixtures(t *testing.T) {
	stat, err := os.ReadFile("testdata/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	// utime 1234 + stime 567 ticks of 10 ms; the command name holds
	// spaces and parentheses.
	if got, want := mustCPU(t, stat), 18010*time.Millisecond; got != want {
		t.Fatalf("parseStatCPU=%v, want %v", got, want)
	}
	status, err := os.ReadFile("testdata/proc/status")
	if err != nil {
		t.Fatal(err)
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rss, int64(44080*1024); got != want {
		t.Fatalf("parseStatusRSS=%d, want %d", got, want)
	}
}

func TestParseProcRefusesDamage(t *testing.T) {
	for name, in := range map[string]string{
		"no command":   "4242 S 1 2 3",
		"short":        "4242 (x) S 1 2 3",
		"bad ticks":    "4242 (x) S 1 4242 4242 0 -1 0 0 0 0 0 abc 567 0",
		"negative":     "4242 (x) S 1 4242 4242 0 -1 0 0 0 0 0 -5 567 0",
		"empty status": "",
	} {
		t.Run(name, func(t *testing.T) {
			if name == "empty status" {
				if _, err := parseStatusRSS([]byte(in)); err == nil {
					t.Fatal("parseStatusRSS of nothing succeeded")
				}
				return
			}
			if _, err := parseStatCPU([]byte(in)); err == nil {
				t.Fatalf("parseStatCPU(%q) succeeded", in)
			}
		})
	}
	if _, err := parseStatusRSS([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Fatal("parseStatusRSS accepted a unit other than kB")
	}
}

func TestReadProcOfLiveProcesses(t *testing.T) {
	self, err := ReadProc(0)
	if err != nil {
		t.Fatal(err)
	}
	if self.RSS <= 0 {
		t.Fatalf("this process's RSS=%d, want > 0", self.RSS)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep command: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if _, err := ReadProc(cmd.Process.Pid); err != nil {
		t.Fatalf("ReadProc(child): %v", err)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Fatal("ReadProc of a pid that cannot exist succeeded")
	}
}

func mustCPU(t *testing.T, b []byte) time.Duration {
	t.Helper()
	d, err := parseStatCPU(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

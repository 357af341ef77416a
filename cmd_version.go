package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// buildInfo is what `mcpgw version` reports. The JSON field names are
// stable.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
}

// commit and buildDate may be set with -ldflags "-X main.commit=… -X
// main.buildDate=…" where the go command cannot stamp VCS information
// (builds from a source tarball, -buildvcs=false).
var commit, buildDate string

// versionInfo reads the version from -ldflags (main.version) or the
// module version of `go install …@vX`, and the commit and its date from
// the VCS stamp the go command embeds.
func versionInfo() buildInfo {
	info := buildInfo{Version: version, Commit: cmp.Or(commit, "unknown"), BuildDate: cmp.Or(buildDate, "unknown"), GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok || commit != "" {
		return info
	}
	if info.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.time":
			info.BuildDate = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

func (b buildInfo) String() string {
	commit := b.Commit
	if b.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("mcpgw %s, commit %s, built %s, %s", b.Version, commit, b.BuildDate, b.GoVersion)
}

func init() {
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintln(c.App.Writer, versionInfo()) }
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, commit, build date and Go version",
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.Bool("json") {
				return writeJSON(c, versionInfo())
			}
			_, err := fmt.Fprintln(c.App.Writer, versionInfo())
			return err
		},
	}
}

// jsonFlag is the --json flag of every command that lists or shows.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON (stable field names) instead of a table"}
}

// writeJSON prints v as indented JSON on the app's Writer.
func writeJSON(c *cli.Context, v any) error {
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

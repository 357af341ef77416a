package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/node"
)

// The serve config file is TOML whose keys are serve's flag names
// (`max-conns = 5000`, `join = ["10.0.0.1:7423"]`, `idle-timeout = "60s"`).
// It is read with BurntSushi/toml: maintained, no dependencies, and its
// metadata tells which keys a file has, so an unknown key (a typo) is an
// error instead of a silently ignored setting — altsrc ignores those.
// Precedence: flag, then environment variable, then file, then default.

// notInConfigFile are serve flags that make no sense in the file itself.
var notInConfigFile = map[string]bool{"config": true, "print-config": true, "help": true}

// configFile holds a parsed config file: each key's value as flag text.
type configFile struct {
	path   string
	values map[string][]string // a list for repeatable flags
}

// readConfigFile parses path against the flags of serve.
func readConfigFile(path string, flags []cli.Flag) (*configFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --config: %w", err)
	}
	var raw map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&raw); err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	known := map[string]cli.Flag{}
	var names []string
	for _, f := range flags {
		n := f.Names()[0]
		if !notInConfigFile[n] {
			known[n] = f
			names = append(names, n)
		}
	}
	cf := &configFile{path: path, values: map[string][]string{}}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := known[k]
		if !ok {
			hint := "keys are serve's flag names without the dashes in front"
			if n := nearest(k, names); n != "" {
				hint = fmt.Sprintf("did you mean %q?", n)
			}
			return nil, fmt.Errorf("--config %s: unknown key %q: %s", path, k, hint)
		}
		vals, err := flagText(f, raw[k])
		if err != nil {
			return nil, fmt.Errorf("--config %s: key %q: %w", path, k, err)
		}
		cf.values[k] = vals
	}
	return cf, nil
}

// flagText turns a TOML value into what the flag would be given on the
// command line, refusing types the flag cannot take.
func flagText(f cli.Flag, v any) ([]string, error) {
	_, slice := f.(*cli.StringSliceFlag)
	if list, ok := v.([]any); ok {
		if !slice {
			return nil, errors.New("a list, but the flag takes one value")
		}
		var out []string
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("list element %v is not a string", e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	switch f.(type) {
	case *cli.StringFlag, *cli.StringSliceFlag:
		if s, ok := v.(string); ok {
			return []string{s}, nil
		}
		return nil, fmt.Errorf("%v is not a string: quote it", v)
	case *cli.DurationFlag:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%v is not a duration: write it as a string such as \"30s\"", v)
		}
		if _, err := time.ParseDuration(s); err != nil {
			return nil, fmt.Errorf("%q is not a duration such as \"30s\" or \"10m\"", s)
		}
		return []string{s}, nil
	case *cli.IntFlag, *cli.Int64Flag:
		if n, ok := v.(int64); ok {
			return []string{strconv.FormatInt(n, 10)}, nil
		}
		return nil, fmt.Errorf("%v is not an integer", v)
	case *cli.BoolFlag:
		if b, ok := v.(bool); ok {
			return []string{strconv.FormatBool(b)}, nil
		}
		return nil, fmt.Errorf("%v is not true or false", v)
	case *cli.Float64Flag:
		switch n := v.(type) {
		case float64:
			return []string{strconv.FormatFloat(n, 'g', -1, 64)}, nil
		case int64:
			return []string{strconv.FormatInt(n, 10)}, nil
		}
		return nil, fmt.Errorf("%v is not a number", v)
	}
	return nil, fmt.Errorf("the flag cannot be set from the file")
}

// apply sets every flag the command line and environment left unset from
// the file, and returns the names it set.
func (cf *configFile) apply(c *cli.Context) ([]string, error) {
	var set []string
	for k, vals := range cf.values {
		if c.IsSet(k) {
			continue // a flag or environment variable overrides the file
		}
		for _, v := range vals {
			if err := c.Set(k, v); err != nil {
				return nil, fmt.Errorf("--config %s: key %q: %w", cf.path, k, err)
			}
		}
		set = append(set, k)
	}
	sort.Strings(set)
	return set, nil
}

// effectiveConfig writes serve's flags as they are in force, in the config
// file's format, each with where it came from. There are no secrets among
// serve's flags (the vault passphrase is read only from its variable or a
// prompt, the admin token only from its file).
func effectiveConfig(c *cli.Context, fromFile map[string]bool) (string, error) {
	var b strings.Builder
	b.WriteString("# mcpgw serve: the configuration in force (flag > environment > --config file > default)\n")
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		if notInConfigFile[name] {
			continue
		}
		var v any
		switch f.(type) {
		case *cli.StringFlag:
			v = c.String(name)
		case *cli.StringSliceFlag:
			v = nonNilSlice(splitList(c.StringSlice(name)))
		case *cli.DurationFlag:
			v = c.Duration(name).String()
		case *cli.IntFlag:
			v = c.Int(name)
		case *cli.Int64Flag:
			v = c.Int64(name)
		case *cli.BoolFlag:
			v = c.Bool(name)
		case *cli.Float64Flag:
			v = c.Float64(name)
		default:
			continue
		}
		line, err := toml.Marshal(map[string]any{name: v})
		if err != nil {
			return "", err
		}
		source := "default"
		switch {
		case fromFile[name]:
			source = "config file"
		case c.IsSet(name):
			source = "flag or environment"
		}
		fmt.Fprintf(&b, "%-60s # %s\n", strings.TrimSpace(string(line)), source)
	}
	return b.String(), nil
}

// flagValue is the canonical text of a flag's value in force.
func flagValue(c *cli.Context, f cli.Flag) string {
	name := f.Names()[0]
	switch f.(type) {
	case *cli.StringSliceFlag:
		return strings.Join(splitList(c.StringSlice(name)), ",")
	case *cli.DurationFlag:
		return c.Duration(name).String()
	case *cli.IntFlag:
		return strconv.Itoa(c.Int(name))
	case *cli.Int64Flag:
		return strconv.FormatInt(c.Int64(name), 10)
	case *cli.BoolFlag:
		return strconv.FormatBool(c.Bool(name))
	case *cli.Float64Flag:
		return strconv.FormatFloat(c.Float64(name), 'g', -1, 64)
	}
	return c.String(name)
}

// defaultValue is the canonical text of a flag's default.
func defaultValue(f cli.Flag) string {
	switch f := f.(type) {
	case *cli.StringFlag:
		return f.Value
	case *cli.StringSliceFlag:
		if f.Value == nil {
			return ""
		}
		return strings.Join(f.Value.Value(), ",")
	case *cli.DurationFlag:
		return f.Value.String()
	case *cli.IntFlag:
		return strconv.Itoa(f.Value)
	case *cli.Int64Flag:
		return strconv.FormatInt(f.Value, 10)
	case *cli.BoolFlag:
		return strconv.FormatBool(f.Value)
	case *cli.Float64Flag:
		return strconv.FormatFloat(f.Value, 'g', -1, 64)
	}
	return ""
}

// canonical is the text flagValue would give for vals from a config file.
func canonical(f cli.Flag, vals []string) string {
	if _, ok := f.(*cli.DurationFlag); ok && len(vals) == 1 {
		if d, err := time.ParseDuration(vals[0]); err == nil {
			return d.String()
		}
	}
	return strings.Join(splitList(vals), ",")
}

func parseLogLevel(s string) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", s)
	}
	return level, nil
}

// serveReloader re-reads the config file on SIGHUP and applies what a
// running node can change: the log level, the connection caps and the
// TLS certificate files. Settings changed in the file that need a restart
// are named in the log line; flags and environment variables still win.
type serveReloader struct {
	path    string
	flags   []cli.Flag
	pinned  map[string]bool   // set by flag or environment at start
	atStart map[string]string // every flag's value in force at start
	level   *slog.LevelVar
	logger  *slog.Logger
	node    interface {
		Reload(node.Live) ([]string, error)
	}
}

// reload is what SIGHUP does; it logs what it changed, or why nothing.
func (r *serveReloader) reload() ([]string, error) {
	changed, restart, err := r.apply()
	if err != nil {
		r.logger.Error("SIGHUP: nothing reloaded: "+err.Error()+"; fix the file and send SIGHUP again", slog.String("config", r.path))
		return nil, err
	}
	attrs := []any{slog.String("config", r.path), slog.Any("reloaded", nonNilSlice(changed))}
	if len(restart) > 0 {
		attrs = append(attrs, slog.Any("restart_needed", restart))
	}
	msg := "SIGHUP: reloaded " + strings.Join(changed, ", ")
	if len(changed) == 0 {
		msg = "SIGHUP: nothing changed"
	}
	if len(restart) > 0 {
		msg += "; a restart is needed for " + strings.Join(restart, ", ")
	}
	r.logger.Info(msg, attrs...)
	return changed, nil
}

func (r *serveReloader) apply() (changed, restart []string, err error) {
	file := &configFile{values: map[string][]string{}}
	if r.path != "" {
		if file, err = readConfigFile(r.path, r.flags); err != nil {
			return nil, nil, err
		}
	}
	// want is each setting as the file now says, flags and environment first.
	want := map[string]string{}
	byName := map[string]cli.Flag{}
	for _, f := range r.flags {
		name := f.Names()[0]
		byName[name] = f
		switch vals, inFile := file.values[name]; {
		case r.pinned[name] || notInConfigFile[name]:
			want[name] = r.atStart[name]
		case inFile:
			want[name] = canonical(f, vals)
		default:
			want[name] = defaultValue(f)
		}
	}
	level, err := parseLogLevel(want["log-level"])
	if err != nil {
		return nil, nil, err
	}
	var live node.Live
	for name, p := range map[string]*int{"max-conns": &live.MaxConns, "max-conns-per-ip": &live.MaxConnsPerIP, "admin-max-conns": &live.AdminMaxConns} {
		if *p, err = strconv.Atoi(want[name]); err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", name, err)
		}
	}
	if changed, err = r.node.Reload(live); err != nil {
		return nil, nil, err
	}
	if old := r.level.Level(); old != level {
		r.level.Set(level)
		changed = append([]string{fmt.Sprintf("log-level %s→%s", strings.ToLower(old.String()), strings.ToLower(level.String()))}, changed...)
	}
	for _, f := range r.flags {
		name := f.Names()[0]
		switch name {
		case "log-level", "max-conns", "max-conns-per-ip", "admin-max-conns":
			continue
		}
		if want[name] != r.atStart[name] {
			restart = append(restart, name)
		}
	}
	return changed, restart, nil
}

package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes, the vault's convention.
const (
	exitError    = 1
	exitUsage    = 2
	exitTampered = 3 // audit verify: a chain is broken
)

// usageError is a command line the command cannot run: it exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// ExitCode makes usageError a cli.ExitCoder.
func (e *usageError) ExitCode() int { return exitUsage }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode is the process exit code for err.
func exitCode(err error) int {
	var ec cli.ExitCoder
	if errors.As(err, &ec) && ec.ExitCode() != 0 {
		return ec.ExitCode()
	}
	return exitError
}

// classify turns urfave/cli's own usage failures, which are plain errors,
// into usage errors that name the command and where its help is.
func classify(err error, path []string) error {
	cmd := strings.Join(append([]string{"mcpgw"}, path...), " ")
	msg := err.Error()
	var ec cli.ExitCoder
	switch {
	case strings.HasPrefix(msg, "Required flag"):
		return usagef("%s: %s: see `%s --help`", cmd, strings.ToLower(msg[:1])+msg[1:], cmd)
	case errors.As(err, &ec) && strings.HasPrefix(msg, "No help topic"):
		return usagef("%s", msg)
	}
	return err
}

// prepareCommands makes every command of app report usage errors the same
// way: a flag it cannot parse, an unknown subcommand (with the nearest
// name), and arguments given to a command that takes none.
func prepareCommands(app *cli.App) {
	app.OnUsageError = usageHandler("mcpgw")
	app.Action = groupAction("", func() []*cli.Command { return app.Commands })
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			full := prefix + " " + c.Name
			c.OnUsageError = usageHandler(full)
			switch {
			case c.Action == nil && len(c.Subcommands) > 0:
				c.Action = groupAction(full, func() []*cli.Command { return c.Subcommands })
			case c.Action != nil && c.ArgsUsage == "" && len(c.Subcommands) == 0:
				action := c.Action
				c.Action = func(ctx *cli.Context) error {
					if ctx.NArg() > 0 {
						return usagef("%s takes no arguments, got %q: see `%s --help`", full, ctx.Args().First(), full)
					}
					return action(ctx)
				}
			}
			walk(full, c.Subcommands)
		}
	}
	walk("mcpgw", app.Commands)
}

func usageHandler(cmd string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		return usagef("%s: %v: see `%s --help`", cmd, err, cmd)
	}
}

// groupAction runs a command that only holds subcommands: with none named
// it shows the help; with an unknown one it suggests the nearest.
// An empty cmd is the app itself.
func groupAction(cmd string, subs func() []*cli.Command) cli.ActionFunc {
	return func(c *cli.Context) error {
		if cmd == "" {
			if c.NArg() == 0 {
				return cli.ShowAppHelp(c)
			}
			cmd = "mcpgw"
		} else if c.NArg() == 0 {
			return cli.ShowSubcommandHelp(c)
		}
		name := c.Args().First()
		var names []string
		for _, s := range subs() {
			if !s.Hidden {
				names = append(names, s.Names()...)
			}
		}
		if near := nearest(name, names); near != "" {
			return usagef("%s: no command %q; did you mean `%s %s`?", cmd, name, cmd, near)
		}
		return usagef("%s: no command %q: see `%s --help`", cmd, name, cmd)
	}
}

// nearest returns the candidate closest to name by edit distance, if it is
// close enough to be a typo: at most two edits (a third of the letters for
// long names) and fewer than its length, or a name it is the start of.
func nearest(name string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := levenshtein(name, c)
		if strings.HasPrefix(c, name) && len(name) >= 2 {
			d = min(d, 1)
		}
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	if bestD < 0 || bestD > max(2, len(name)/3) || bestD >= len(name) {
		return ""
	}
	return best
}

// levenshtein is the edit distance between a and b.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

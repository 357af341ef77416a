package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Flags after arguments. urfave/cli v2 parses a command's flags with the
// standard flag package, which stops at the first positional argument, so
// `mcpgw route add linear https://… --kind external` used to leave --kind
// as an argument. Moving to urfave/cli v3 (whose parser intersperses)
// would rewrite every command file; instead, before parsing, each
// command's flag tokens are moved ahead of its positional arguments using
// that command's own flag definitions, so a flag's value is never taken
// for an argument and everything after `--` stays an argument.

// reorderArgs returns args (args[0] is the program) with, at every level
// of the command path, the flags moved before the positional arguments,
// and the names of that command path.
func reorderArgs(app *cli.App, args []string) (reordered, path []string) {
	if len(args) < 2 || args[len(args)-1] == "--generate-bash-completion" {
		return args, nil // completion requests are parsed by position
	}
	out := []string{args[0]}
	flags, cmds := app.Flags, app.Commands
	rest := args[1:]
	for {
		var flagToks, pos []string
		dashDash := false
		var next *cli.Command
		i := 0
		for ; i < len(rest); i++ {
			tok := rest[i]
			if tok == "--" {
				dashDash = true
				pos = append(pos, rest[i+1:]...)
				break
			}
			if len(tok) > 1 && tok[0] == '-' {
				flagToks = append(flagToks, tok)
				if !strings.Contains(tok, "=") && takesValue(flags, strings.TrimLeft(tok, "-")) && i+1 < len(rest) {
					i++
					flagToks = append(flagToks, rest[i])
				}
				continue
			}
			if len(pos) == 0 {
				if next = findCommand(cmds, tok); next != nil {
					break
				}
			}
			pos = append(pos, tok)
		}
		out = append(out, flagToks...)
		if next != nil {
			out = append(out, rest[i])
			path = append(path, next.Name)
			flags, cmds, rest = next.Flags, next.Subcommands, rest[i+1:]
			continue
		}
		if dashDash || startsWithDash(pos) {
			out = append(out, "--")
		}
		return append(out, pos...), path
	}
}

// takesValue reports whether the flag called name, among flags, reads the
// next token as its value. Unknown names are left for the parser to refuse.
func takesValue(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				tv, ok := f.(interface{ TakesValue() bool })
				return ok && tv.TakesValue()
			}
		}
	}
	return false
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func startsWithDash(args []string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			return true
		}
	}
	return false
}

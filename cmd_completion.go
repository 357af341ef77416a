package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask the binary itself for candidates
// (urfave/cli's --generate-bash-completion), so they follow new commands
// and flags without being regenerated.
const bashCompletion = `# bash completion for mcpgw: source <(mcpgw completion bash)
_mcpgw_complete() {
  local cur words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _mcpgw_complete mcpgw
`

const zshCompletion = `#compdef mcpgw
# zsh completion for mcpgw: source <(mcpgw completion zsh)
_mcpgw() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _mcpgw mcpgw
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: `Examples:
   source <(mcpgw completion bash)                         # in ~/.bashrc
   source <(mcpgw completion zsh)                          # in ~/.zshrc
   mcpgw completion fish > ~/.config/fish/completions/mcpgw.fish`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("usage: mcpgw completion bash|zsh|fish")
			}
			switch shell := c.Args().First(); shell {
			case "bash":
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(c.App.Writer, zshCompletion)
				return err
			case "fish":
				script, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(c.App.Writer, strings.TrimLeft(script, "\n"))
				return err
			default:
				return usagef("mcpgw completion: unknown shell %q: use bash, zsh or fish", shell)
			}
		},
	}
}

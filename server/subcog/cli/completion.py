"""`subcog completion`: a shell completion script built from the parser itself."""

from __future__ import annotations

import argparse

from subcog.cli.parser import actions, build_parser, options, subcommands
from subcog.config import Settings


def completion(args: argparse.Namespace, _settings: Settings) -> int:
    print(completion_script(args.shell, build_parser()), end="")
    return 0


def completion_script(shell: str, parser: argparse.ArgumentParser) -> str:
    """A completion script for bash (zsh runs it through bashcompinit): command names, each
    command's options, the choices of an option or argument that has them; files otherwise."""
    commands = subcommands(parser)
    flags: list[str] = []
    values: list[str] = []
    positional: list[str] = []
    for name, command in commands.items():
        flags.append(f"        {name}) opts='{' '.join(options(command))}' ;;")
        for action in actions(command):
            if action.choices is None:
                continue
            words = " ".join(map(str, action.choices))
            if action.option_strings:
                values.append(f"        {'|'.join(action.option_strings)}) words='{words}' ;;")
            else:
                positional.append(f"            {name}) words='{words}' ;;")
    script = BASH_COMPLETION.format(
        commands=" ".join(commands),
        flags="\n".join(flags),
        values="\n".join(values),
        positional="\n".join(positional),
    )
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


BASH_COMPLETION = """\
# subcog completion for bash: source <(subcog completion bash), or save it to a file that
# ~/.bashrc sources. zsh: source <(subcog completion zsh).
_subcog() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} opts= words=
    COMPREPLY=()
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{commands} --help --version" -- "$cur"))
        return
    fi
    if [[ "$cur" == -* ]]; then
        case "${{COMP_WORDS[1]}}" in
{flags}
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$prev" in
{values}
        -*) ;;
        *)
            case "${{COMP_WORDS[1]}}" in
{positional}
            esac ;;
    esac
    [ -n "$words" ] && COMPREPLY=($(compgen -W "$words" -- "$cur"))
    return 0
}}
complete -o default -F _subcog subcog
"""

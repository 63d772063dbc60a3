"""How pool's commands read their command lines, beyond click's defaults.

- An option given twice is refused, saying so (click keeps the last silently: `pool
  status --state running --state queued` showed only the queued jobs). Options that
  take several values say so (``multiple``) and keep them all.
- ``pool submit`` and ``pool run`` take everything from the task or the program on as
  the job's own (as pueue and tsp do); before it, a token that looks like an option and
  is not one of theirs is a mistake (`pool submit --command --retry 2 -- ls` once ran a
  program named `--retry`): refused with click's "No such option ... Did you mean".
  ``--`` ends their options, so a program's name may start with ``-``.
"""

from __future__ import annotations

import click


def single_options(command: click.Command) -> dict[str, click.Option]:
    """The command's options that take one value, by each of their names."""
    return {name: param for param in command.params
            if isinstance(param, click.Option) and not param.multiple and not param.count and not param.is_flag
            for name in (*param.opts, *param.secondary_opts)}


def flag_names(command: click.Command) -> set[str]:
    return {name for param in command.params
            if isinstance(param, click.Option) and (param.is_flag or param.count)
            for name in (*param.opts, *param.secondary_opts)}


class StrictCommand(click.Command):
    """A command that refuses an option given twice."""

    # Where the command's own options end: "--", or (a job's command) its first argument.
    options_end_at_first_argument = False

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        self.check_options(ctx, args)
        return super().parse_args(ctx, args)

    def check_options(self, ctx: click.Context, args: list[str]) -> None:
        single, flags = single_options(self), flag_names(self)
        multiple = {name for param in self.params if isinstance(param, click.Option) and param.multiple
                    for name in (*param.opts, *param.secondary_opts)}
        seen: set[str] = set()
        tokens = iter(args)
        for token in tokens:
            if token == "--":
                return
            if not token.startswith("-") or token == "-":
                if self.options_end_at_first_argument:
                    return
                continue
            name, has_value, _ = token.partition("=")
            if name in single:
                if single[name].name in seen:
                    raise click.UsageError(f"{name} is given more than once; give it once", ctx)
                seen.add(str(single[name].name))
                if not has_value:
                    next(tokens, None)  # its value, whatever it looks like
            elif name in multiple and not has_value:
                next(tokens, None)
            elif self.options_end_at_first_argument and name not in flags and name not in ("-h", "--help"):
                self.no_such_option(ctx, name)

    def no_such_option(self, ctx: click.Context, name: str) -> None:
        known = [n for param in self.params if isinstance(param, click.Option)
                 for n in (*param.opts, *param.secondary_opts)]
        raise click.NoSuchOption(name, possibilities=known, ctx=ctx)


class JobCommand(StrictCommand):
    """`pool submit` and `pool run`: from the task or the program on, everything is the
    job's; before it, only their own options."""

    options_end_at_first_argument = True

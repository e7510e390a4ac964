"""Generic click helpers the `vmr` commands share (the cli layer; imports nothing heavy)."""

from __future__ import annotations

import click


class MultiValueOption(click.Option):
    """An option that takes one or more values: `--k 5 10` as well as `--k 5 --k 10`.

    Click rejects nargs=-1 on options, so this option consumes the following non-option tokens
    itself."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self._previous_parser_process = None
        self._eat_all_parser = None

    def add_to_parser(self, parser, ctx):
        def parser_process(value, state):
            values = [value]
            while state.rargs and not state.rargs[0].startswith("-"):
                values.append(state.rargs.pop(0))
            for v in values:
                self._previous_parser_process(v, state)

        retval = super().add_to_parser(parser, ctx)
        for name in self.opts:
            our_parser = parser._long_opt.get(name) or parser._short_opt.get(name)
            if our_parser:
                self._eat_all_parser = our_parser
                self._previous_parser_process = our_parser.process
                our_parser.process = parser_process
                break
        return retval


def csv_list(value: str | None) -> list[str] | None:
    """`a, b,c` -> ["a", "b", "c"]; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]

"""``tauray spaces list | show``: the built-in search spaces and YAML space files."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Search spaces: the built-ins and YAML space files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("list")
def spaces_list_command() -> None:
    """List the built-in search spaces (name, method, parameter count, objective, summary)."""
    from tauray_spaces import format_space_list, list_spaces

    typer.echo(format_space_list(list_spaces()))


@app.command("show")
def spaces_show_command(
    name: Annotated[str, typer.Argument(help="A built-in space's name or a .yaml space file.")],
    as_yaml: Annotated[
        bool, typer.Option("--yaml", help="Print the space as a YAML file to copy and edit.")
    ] = False,
) -> None:
    """Show a space: its parameters, their conditions and help, fixed settings and objective."""
    from tauray_spaces import format_space, get_space

    space = get_space(name)
    typer.echo(space.to_yaml() if as_yaml else format_space(space), nl=not as_yaml)

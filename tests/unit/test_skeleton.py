"""The CLI is wired: every documented subcommand is listed by --help."""

from p2pinfer.cli import build_parser


def test_help_lists_every_subcommand() -> None:
    help_text = build_parser().format_help()
    for command in ("node", "peers", "models", "plan", "run", "ledger"):
        assert command in help_text

"""``kanscope`` argument handling: --version, options where users put them, plain help."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from sqlalchemy import create_engine, inspect

from app.cli import build_parser, main, parse_args


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"kanscope {version('kanscope')}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_migrate_takes_the_database_url_before_or_after_the_subcommand(where, tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    option = ["--database-url", url]
    assert main([*option, "migrate"] if where == "before" else ["migrate", *option]) == 0
    engine = create_engine(url)
    assert "runs" in inspect(engine).get_table_names()
    engine.dispose()


def test_a_url_after_the_subcommand_wins_and_none_given_stays_none():
    assert parse_args(["--database-url", "a", "migrate", "--database-url", "b"]).database_url == "b"
    assert parse_args(["--database-url", "a", "serve"]).database_url == "a"
    assert parse_args(["train", "--csv", "x.csv", "--target", "y"]).database_url is None


def test_worker_passes_unknown_options_to_celery():
    args = parse_args(["worker", "--database-url", "u", "-c", "2", "--pool", "solo"])
    assert args.database_url == "u" and args.celery_args == ["-c", "2", "--pool", "solo"]
    assert parse_args(["worker", "--", "-c", "2"]).celery_args == ["-c", "2"]
    with pytest.raises(SystemExit):
        parse_args(["migrate", "--pool", "solo"])


def test_help_texts_have_no_rst_markup():
    parser = build_parser()
    texts = [parser.format_help()]
    texts += [sub.format_help() for sub in parser._subparsers._group_actions[0].choices.values()]
    assert all("``" not in text for text in texts)

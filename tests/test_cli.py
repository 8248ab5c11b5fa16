"""The ``tutor`` command line: its commands, ingest and dataset info."""

from __future__ import annotations

import json

import click
import typer
from typer.testing import CliRunner

from tests.conftest import FIXTURES
from tutor.cli import app

runner = CliRunner()
B = FIXTURES / "benchmark"


def test_help_lists_the_commands_then_the_groups_in_order():
    """tutor/cli/__init__.py assembles the groups' commands; ``tutor --help`` keeps its order."""
    group = typer.main.get_command(app)
    assert group.list_commands(click.Context(group)) == [
        *("ingest", "formats", "train", "evaluate", "compare", "report", "demo", "import"),
        *("serve", "policy-eval", "dataset", "db", "orgs", "models", "keys", "states"),
        *("prerequisites", "simulate"),
    ]


def test_ingest_then_info_json(tmp_path):
    out = tmp_path / "ds"
    r = runner.invoke(app, ["ingest", "four-line", str(B / "four_line"), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "merged" in r.output and "rejected 0" in r.output
    r = runner.invoke(app, ["dataset", "info", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    for key in ("learners", "interactions", "items", "concepts", "rejected"):
        assert key in info
    assert info["learners"] == 4
    r = runner.invoke(app, ["dataset", "info", str(out)])
    assert r.exit_code == 0 and "sequence length" in r.output


def test_ingest_reports_rejections_by_reason(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("2\n1,2\n0,1\n2\n3,4\n0,7\n")
    r = runner.invoke(app, ["ingest", "three-line", str(f), "--out", str(tmp_path / "ds"), "-q"])
    assert r.exit_code == 0, r.output
    assert "rejected 1: answer not 0 or 1" in r.output


def test_wrong_format_exit_code_and_message(tmp_path):
    r = runner.invoke(app, ["ingest", "nope", str(B), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 2
    assert "unknown format 'nope'" in r.output


def test_existing_output_refused(tmp_path):
    out = tmp_path / "ds"
    args = ["ingest", "three-line", str(B / "three_line"), "--out", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_bad_option_syntax(tmp_path):
    r = runner.invoke(
        app,
        [
            "ingest",
            "three-line",
            str(B / "three_line"),
            "--out",
            str(tmp_path / "d"),
            "-o",
            "novalue",
        ],
    )
    assert r.exit_code == 2


def test_formats_lists_every_format():
    r = runner.invoke(app, ["formats"])
    assert r.exit_code == 0
    for name in ("assistments-2009", "ednet-kt1", "three-line", "pykt", "xapi", "simulate"):
        assert name in r.output


def test_info_on_missing_dataset(tmp_path):
    r = runner.invoke(app, ["dataset", "info", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a dataset directory" in r.output


def test_ingest_tabular_overflowing_timestamp_is_rejected_not_a_traceback(tmp_path):
    f = tmp_path / "log.tsv"
    f.write_text(
        "user_id\titem_id\ttimestamp\tcorrect\tskill_id\n"
        "1\t10\t99999999999999999999\t1\t3\n"
        "1\t11\t1600000000000\t0\t3\n"
        "1\t12\tnan\t1\t3\n"
    )
    r = runner.invoke(app, ["ingest", "tabular", str(f), "--out", str(tmp_path / "ds"), "-q"])
    assert r.exit_code == 0, r.output
    assert r.exception is None
    assert "timestamp out of range" in r.output and "bad timestamp" in r.output


def test_ingest_xapi_deeply_nested_statement_is_rejected_not_a_traceback(tmp_path):
    good = (FIXTURES / "xapi" / "statements.jsonl").read_text().splitlines()[0]
    f = tmp_path / "deep.jsonl"
    f.write_text(good + "\n" + "[" * 100_000 + "\n")
    r = runner.invoke(app, ["ingest", "xapi", str(f), "--out", str(tmp_path / "ds"), "-q"])
    assert r.exit_code == 0, r.output
    assert "nested too deep" in r.output
    only = tmp_path / "only.json"
    only.write_text("[" * 100_000)
    r = runner.invoke(app, ["ingest", "xapi", str(only), "--out", str(tmp_path / "d2"), "-q"])
    assert r.exit_code == 2 and not isinstance(r.exception, RecursionError)
    assert "nested too deep" in r.output and "Traceback" not in r.output

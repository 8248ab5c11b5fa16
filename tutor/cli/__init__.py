"""The ``tutor`` command line (Typer): :data:`app` assembled from the command groups.

* :mod:`.data`: ``ingest``, ``formats``, ``dataset info``, ``import`` (logs to datasets, and
  datasets into the service);
* :mod:`.models`: ``train``, ``evaluate``, ``compare``, ``report`` and ``models`` (training,
  judging and registering knowledge-tracing models);
* :mod:`.admin`: ``db``, ``orgs``, ``keys``, ``states``, ``prerequisites``, ``serve`` and
  ``demo`` (running the service);
* :mod:`tutor.experiments.cli`: ``simulate`` and ``policy-eval`` (the research harness);
* :mod:`.common`: the consoles and helpers they share.

The order below is the order of ``tutor --help``: the commands, then the groups.
"""

from __future__ import annotations

import typer

from tutor.experiments.cli import policy_eval_cmd, simulate_app

from . import admin, data, models

app = typer.Typer(
    name="tutor",
    help="kt-tutor: ingest learner logs, train knowledge-tracing models, serve a tutor.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("ingest")(data.ingest_cmd)
app.command("formats")(data.formats_cmd)
app.command("train")(models.train_cmd)
app.command("evaluate")(models.evaluate_cmd)
app.command("compare")(models.compare_cmd)
app.command("report")(models.report_cmd)
app.command("demo")(admin.demo_cmd)
app.command("import")(data.import_cmd)
app.command("serve")(admin.serve_cmd)
app.command("policy-eval")(policy_eval_cmd)

app.add_typer(data.dataset_app, name="dataset")
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.orgs_app, name="orgs")
app.add_typer(models.models_app, name="models")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.states_app, name="states")
app.add_typer(admin.prereq_app, name="prerequisites")
app.add_typer(simulate_app, name="simulate")


def main() -> None:
    """The ``tutor`` console script."""
    app()


__all__ = ["app", "main"]

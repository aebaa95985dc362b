"""`shallowmimic tune`: Bayesian hyperparameter search of teachers and students (Optuna)."""

from __future__ import annotations

from pathlib import Path

import click

from shallowmimic.cli.options import Group, Registry, combined, data_option, device_option, load_data, split_options

search_options = combined(
    click.option("--trials", type=int, default=6, show_default=True,
                 help="Completed trials the study should reach (all workers together)."),
    click.option("--storage", default=None,
                 help="SQLAlchemy URL of the study store (default: sqlite in --out; PostgreSQL for many "
                      "machines, e.g. postgresql://user@host/db)."),
    click.option("--sampler", type=Registry("models.spaces", "SAMPLERS"), default=None,
                 help="Default: gp, as in `run`'s [search] table (study.config.SearchSettings)."),
    click.option("--startup", type=int, default=None, help="Random trials before the sampler (default: 10)."),
    click.option("--heartbeat", type=int, default=None,
                 help="Seconds between heartbeats; a worker silent for 2x this is declared dead (default: 60)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--epochs", type=int, default=10, show_default=True, help="Epoch cap per trial."),
)


@click.group(cls=Group)
def tune():
    """Bayesian hyperparameter search (Optuna, GP sampler). Start any number of workers."""


@tune.command("teacher")
@data_option
@device_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory (shared by workers).")
@search_options
@split_options
def tune_teacher_cmd(data_path, device, out, trials, storage, sampler, startup, heartbeat, seed, epochs, val_size,
                     train_limit, val_limit):
    """Search the paper teacher's 18 hyperparameters; validation error is the objective."""
    from shallowmimic.core.device import resolve_device
    from shallowmimic.data.split import SplitConfig
    from shallowmimic.search.studies import best_trials
    from shallowmimic.study.tuning import tune_teachers

    sc = _search_config(trials, seed, storage, sampler=sampler, startup=startup, heartbeat=heartbeat)
    study = tune_teachers(load_data(data_path), out, sc, epochs, resolve_device(device),
                          SplitConfig(val_size, 0, train_limit, val_limit), log=click.echo)
    _print_study(study, best_trials(study, 5))


@tune.command("student")
@data_option
@device_option
@click.option("--family", required=True)
@click.option("--budget", required=True)
@click.option("--loss", type=Registry("training.losses", "LOSSES"), default="mimic", show_default=True)
@click.option("--transfer", "transfer_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory (shared by workers).")
@search_options
@split_options
def tune_student_cmd(data_path, device, family, budget, loss, transfer_dir, out, trials, storage, sampler, startup,
                     heartbeat, seed, epochs, val_size, train_limit, val_limit):
    """Search a student's learning rate, momentum, init/input scale and free widths."""
    from shallowmimic.core.device import resolve_device
    from shallowmimic.data.split import SplitConfig
    from shallowmimic.distill.transfer import read_manifest
    from shallowmimic.models.budget import parse_budget
    from shallowmimic.search.studies import best_trials
    from shallowmimic.study.tuning import tune_students
    from shallowmimic.training.loop import TrainConfig
    from shallowmimic.training.losses import default_grad_clip

    read_manifest(transfer_dir)  # before the study is opened: a wrong path writes no failed trials
    sc = _search_config(trials, seed, storage, sampler=sampler, startup=startup, heartbeat=heartbeat)
    study = tune_students(load_data(data_path), out, sc, transfer_dir, family, parse_budget(budget), loss,
                          TrainConfig(epochs=epochs, grad_clip=default_grad_clip(loss)), resolve_device(device),
                          SplitConfig(val_size, 0, train_limit, val_limit), log=click.echo)
    _print_study(study, best_trials(study, 5))


def _print_study(study, best) -> None:
    from shallowmimic.search.studies import counts

    c = counts(study)
    click.echo(f"study {study.study_name} ({study.user_attrs.get('sampler_class')}): "
               + ", ".join(f"{n} {s.name.lower()}" for s, n in c.items() if n))
    for t in best:
        click.echo(f"  trial {t.number:>3}  val error {t.value:.4f}  {t.user_attrs.get('spec', '')}")


def _search_config(trials: int, seed: int, storage: str | None, **given):
    """The search the options ask for; an option not given keeps the shared default
    (`study.config.SearchSettings`)."""
    from shallowmimic.study.tuning import SearchConfig

    return SearchConfig(trials=trials, seed=seed, storage=storage or "",
                        **{k: v for k, v in given.items() if v is not None})

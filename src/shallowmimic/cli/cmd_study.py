"""The whole study: `run`, `status`, `report` and `export`."""

from __future__ import annotations

from pathlib import Path

import click

from shallowmimic.cli.options import FilesOnly, Registry, _check_device, data_option, load_data
from shallowmimic.core.errors import UserError


@click.command("run")
@data_option
@click.option("--preset", default="quick", show_default=True,
              help="smoke, quick, paper, or a .toml file (which may start with extends = \"quick\").")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study directory (required unless --print-config).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set students.epochs=5 (repeatable).")
@click.option("--seed", type=int, default=None,
              help="Every seed of the study (split, teachers, transfer set, students, search); a --set of "
                   "one of them still wins.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as TOML and exit.")
@click.option("--device", default=None, callback=_check_device,
              help="cpu, cuda, cuda:N or auto (default: the preset's).")
@click.option("--precision", type=Registry("core.device", "PRECISIONS"), default=None,
              help="bf16 autocast or float32 (default: the preset's, auto: bf16 on CUDA and AMX CPUs).")
@click.option("--compile", "compile_", is_flag=True, help="Train through torch.compile (pays on GPUs for long runs).")
@click.option("--retry-failed", is_flag=True,
              help="Train again the students marked failed (diverged); otherwise a failed job stays failed.")
@click.option("--no-progress", is_flag=True)
@click.option("--workers", type=int, default=1, show_default=True,
              help="Start this many cooperating workers here (a GPU each when as many are visible, else "
                   "the CPU threads divided). The same command started on other machines with a shared "
                   "--set search.storage joins them.")
@click.option("--no-report", is_flag=True,
              help="Stop after run.json and leave the report to another worker (`--workers N` gives it to "
                   "worker 0) or to `shallowmimic report`.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (every stage and job, its counted FLOPs, the total) and a time estimate "
                   "from a few seconds' calibration; train and write nothing.")
def run_cmd(data_path, preset, out, overrides, seed, print_config, device, precision, compile_, retry_failed,
            no_progress, workers, no_report, dry_run):
    """Run the whole study (teachers -> ensemble -> transfer set -> students -> report).
    Re-running the same command resumes; finished work is skipped. Several runs of one study
    (this command started again, or --workers N) divide its jobs between them."""
    from shallowmimic.study.config import load_study, seed_overrides

    ov = (seed_overrides(seed) if seed is not None else []) + list(overrides) + \
        ([f'device="{device}"'] if device else []) + \
        ([f'precision="{precision}"'] if precision else []) + (["compile=true"] if compile_ else [])
    ctx = click.get_current_context()
    if ctx.get_parameter_source("image_size") is not click.core.ParameterSource.DEFAULT:
        ov.insert(0, f"images.size={ctx.meta['image_size']}")  # the study's [images] table; a --set wins
    cfg = load_study(preset, ov)  # a bad config fails here, once, not in every worker
    if print_config:
        from dataclasses import asdict

        from shallowmimic.core.config import to_toml

        click.echo(to_toml(asdict(cfg)), nl=False)
        return
    if out is None:
        raise click.UsageError("Missing option '--out'.")
    from shallowmimic.study.run import run_study
    if workers < 1:
        raise UserError(f"--workers {workers}: expected 1 or more")
    from shallowmimic.study.run import dry_run as plan_only

    if dry_run:
        plan_only(cfg, out, data_path, workers)
        return
    if workers != 1:
        from shallowmimic.cli.launch import launch

        if retry_failed:
            raise UserError("--retry-failed with --workers: run it once with one worker first")
        plan_only(cfg, out, data_path, workers, starting=True)
        args = ["--preset", preset, "--out", str(out), "--no-progress", *(a for o in ov for a in ("--set", o))]
        launch(args + (["--data", str(data_path)] if data_path else []), workers, out, cfg.device, echo=click.echo,
               report=not no_report)
        return
    run_study(cfg, out, data_path, progress=not no_progress, retry_failed=retry_failed, report=not no_report)


@click.command("status", cls=FilesOnly)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--watch", type=float, default=0.0, metavar="SECONDS",
              help="Print again every SECONDS until the study has finished (0: once).")
def status_cmd(directory, watch):
    """Where a study is, running or finished: jobs done per stage, each worker's job and epoch,
    counted FLOPs done, elapsed time and ETA. Reads the study directory; never joins the study."""
    import time

    from shallowmimic.study.status import study_status

    if watch < 0:
        raise UserError(f"--watch {watch}: expected 0 or more seconds")
    while True:
        status = study_status(directory)
        click.echo("\n".join(status.lines()))
        if not watch or status.finished:
            return
        time.sleep(watch)


@click.command("report")
@click.argument("directory", type=click.Path(path_type=Path))
def report_cmd(directory):
    """(Re)write the report of a study directory: results, tables, findings, Figure 1."""
    from shallowmimic.study.run import report_only

    r = report_only(directory)
    click.echo(f"wrote {directory}/report/ (report.md, report.html, results.csv, results.json, figure1.png/svg)")
    for f in r["findings"]:
        click.echo("  " + f.line())


@click.command("export")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="ONNX file to write (default: DIRECTORY/model.onnx, or ensemble.onnx for an ensemble).")
@click.option("--check-only", is_flag=True, help="Check an existing ONNX file instead of writing one.")
@data_option
def export_cmd(directory, out, check_only, data_path):
    """Write a teacher, student or ensemble directory as one ONNX graph (uint8 images in, logits
    out; dynamic batch) and check it with onnxruntime against PyTorch on 1,000 test images."""
    from shallowmimic.deploy.export import check_existing, check_request, export_onnx

    check_request(directory, out, check_only)
    ds = load_data(data_path)
    r = (check_existing if check_only else export_onnx)(directory, ds.x_test, ds.y_test, out)
    click.echo(f"{r['path']}: {'checked' if check_only else 'written'}; largest |logit difference| "
               f"onnxruntime vs PyTorch {r['max_abs_logit_diff']:.2e} (tolerance {r['tolerance']:g}) on "
               f"{r['images']} test images; accuracy there {100 * r['torch_acc']:.2f}% (PyTorch), "
               f"{100 * r['onnx_acc']:.2f}% (onnxruntime)")

"""The ``al`` command. ``al simulate`` runs the embedded loop with an oracle labeler and reports how
much labeling each strategy saves compared with random picking."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import ActiveLearningError

if TYPE_CHECKING:
    from rich.console import Console

    from shared.sim.report import Curve

DEFAULT_STRATEGIES = ("least_confidence", "margin", "entropy", "random")
PRESETS = {  # sizes that fit each built-in dataset (digits has 1,797 items)
    "glyphs67": {"initial": 200, "rounds": 15, "batch": 100, "scored": 1000, "test_size": 2000, "val_size": 1000},
    "digits": {"initial": 50, "rounds": 15, "batch": 50, "scored": 500, "test_size": 360, "val_size": 180},
}
GENERIC = {"initial": 200, "rounds": 15, "batch": 100, "scored": 1000, "test_size": 0.15, "val_size": 0.1}


def _parser() -> argparse.ArgumentParser:
    from shared.settings import Settings

    default_strategy = Settings.model_fields["strategy"].default
    p = argparse.ArgumentParser(prog="al", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="measure label efficiency offline with an oracle labeler")
    s.add_argument("--dataset", default="glyphs67",
                   help="glyphs67 (default), digits, a folder with one sub-folder per class, or an .npz")
    s.add_argument("--strategies", default=None,
                   help=f"comma-separated (default: {default_strategy},{','.join(DEFAULT_STRATEGIES)})")
    s.add_argument("--default-strategy", default=default_strategy,
                   help="the strategy the summary calls the default")
    s.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    for name in ("initial", "rounds", "batch", "scored"):
        s.add_argument(f"--{name}", type=int, default=None)
    s.add_argument("--test-size", type=int, default=None)
    s.add_argument("--val-size", type=int, default=None)
    s.add_argument("--embedding-width", type=int, default=None,
                   help="width of the embedding the model logs (default 64; 0: the whole feature vector)")
    s.add_argument("--workers", type=int, default=None, help="parallel runs (default: cores)")
    s.add_argument("--out", type=Path, default=Path("runs/latest"))
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    b = sub.add_parser("bootstrap", help="make a model version the first serving one (endpoint + ADX), Azure backend")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", type=Path, help="a folder with model.onnx, head.npz and meta.json "
                     "(what the project's trainer writes)")
    src.add_argument("--aml-model", help="a model already registered in Azure ML, as NAME:VERSION")
    b.add_argument("--classes", default=None, help="comma-separated class names, in the model's order "
                   "(default: the folder's meta.json)")
    b.add_argument("--collector-url", default="", help="the scoring_collector's /api/predictions URL for the "
                   "scoring script's monitoring client (AL_COLLECTOR_URL of the deployment)")
    b.add_argument("--instance-type", default="Standard_DS3_v2")
    b.add_argument("--image", default="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest")
    b.add_argument("--timeout-minutes", type=float, default=60)
    lab = sub.add_parser("labeling", help="Label Studio: create or update the model's labeling project")
    lsub = lab.add_subparsers(dest="action", required=True)
    su = lsub.add_parser("setup", help="create or update the project (label config from the model's classes, "
                         "uncertainty sampling, the items' storage, the webhook to the label app); prints its id")
    su.add_argument("--url", default=None, help="Label Studio's base URL (default: AL_LABEL_STUDIO_URL); the "
                    "token is read from AL_LABEL_STUDIO_TOKEN, never from the command line")
    su.add_argument("--project-id", type=int, default=None, help="update this project (default: "
                    "AL_LABEL_STUDIO_PROJECT_ID, else the project titled --title, else a new one)")
    su.add_argument("--title", default=None, help="project title (default: the model name)")
    su.add_argument("--classes", default=None, help="comma-separated classes in the model's order (default: the "
                    "serving model version's, read from the store of AL_BACKEND)")
    su.add_argument("--storage", choices=("azure", "localfiles", "none"), default="azure",
                    help="where Label Studio reads the items: the labeling account (azure, proxy mode) or a "
                    "local folder (localfiles)")
    su.add_argument("--storage-account", default="", help="azure: the labeling account's name; its key is read "
                    "from AL_LABELING_ACCOUNT_KEY")
    su.add_argument("--container", default=None, help="azure: the labeling container (default: AL_LABELING_CONTAINER)")
    su.add_argument("--local-path", type=Path, default=None, help="localfiles: the folder holding the labeling "
                    "container (inside Label Studio's LOCAL_FILES_DOCUMENT_ROOT)")
    su.add_argument("--webhook-url", default="", help="the label app's /api/labels/webhook URL; its function key "
                    "is read from AL_LABEL_STUDIO_WEBHOOK_KEY and sent as the x-functions-key header")
    _label_parser(sub, default_strategy)
    return p


def _label_parser(sub: Any, default_strategy: str) -> None:
    la = sub.add_parser("label", help="label your own images in a local Label Studio; the model retrains as you go",
                        description="The embedded loop with you as the labeler: Label Studio on 127.0.0.1, a "
                        "random first batch, then a model retrained every --retrain-every labels whose guesses "
                        "come with the next batch it picks. Ctrl-C stops; run it again to go on.")
    la.add_argument("--images", type=Path, default=None, help="a folder of images (any nesting; default: a "
                    "built-in demo set of glyphs, 10 classes x 30 images, with 100 more held out to measure the model)")
    la.add_argument("--classes", default=None, help="comma-separated classes to label; needed with --images unless "
                    "the folder holds one sub-folder per class (their names are then the classes, not the labels)")
    la.add_argument("--data-dir", type=Path, default=Path("data/label"),
                    help="where the loop and Label Studio keep everything (default data/label); a restart resumes")
    la.add_argument("--port", type=int, default=8080, help="Label Studio's port on 127.0.0.1 (default 8080)")
    la.add_argument("--batch", type=int, default=20, help="images per hand-off (default 20)")
    la.add_argument("--retrain-every", type=int, default=20, help="retrain after this many new labels (default 20)")
    la.add_argument("--strategy", default=default_strategy, help=f"selection strategy (default {default_strategy})")
    la.add_argument("--no-browser", action="store_true", help="do not open the browser")
    la.add_argument("--max-rounds", type=int, default=None, help="stop after this many retrains")
    la.add_argument("--once", action="store_true", help="one pass (take the answers in, retrain if due, hand off "
                    "if nothing is open), then stop")
    la.add_argument("--poll-seconds", type=float, default=3.0, help="how often answers are read back (default 3)")


def label(args: argparse.Namespace) -> int:
    """``al label``: the loop with a person labeling in a local Label Studio (stopped on exit)."""
    import signal

    from rich.console import Console

    from shared.local.items import parse_classes
    from shared.local.loop import LoopOptions
    from shared.local.session import LabelConfig
    from shared.local.session import label as run_label

    for name in ("batch", "retrain_every", "max_rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ActiveLearningError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not 1 <= args.port <= 65535:
        raise ActiveLearningError(f"--port must be 1..65535, got {args.port}")
    if args.poll_seconds <= 0:
        raise ActiveLearningError(f"--poll-seconds must be positive, got {args.poll_seconds}")
    config = LabelConfig(
        images=args.images, classes=parse_classes(args.classes), data_dir=args.data_dir, port=args.port,
        open_browser=not args.no_browser,
        loop=LoopOptions(batch=args.batch, retrain_every=args.retrain_every, strategy=args.strategy,
                         poll_seconds=args.poll_seconds, max_rounds=args.max_rounds, once=args.once))

    def terminate(signum: int, frame: object) -> None:  # `kill`: stop as Ctrl-C does, Label Studio too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    run_label(config, Console())
    return 0


def labeling_setup(args: argparse.Namespace) -> int:
    """``al labeling setup``: the Label Studio project of the model, created or brought up to date;
    the last stdout line is JSON with its id (what AL_LABEL_STUDIO_PROJECT_ID must say)."""
    import json
    import os

    from shared.adapters.label_studio import LabelStudioClient
    from shared.settings import get_settings

    settings = get_settings()
    url = args.url or settings.label_studio_url
    token = settings.label_studio_token.get_secret_value()
    if not url:
        raise ActiveLearningError("no Label Studio URL (give --url or set AL_LABEL_STUDIO_URL)")
    if not token:
        raise ActiveLearningError("setting AL_LABEL_STUDIO_TOKEN is missing (the loop's Label Studio token)")
    if args.classes:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    else:
        from shared.backends import Backend

        serving = Backend(settings).store.serving_version(settings.model_name)
        if serving is None:
            raise ActiveLearningError(f"model {settings.model_name!r} has no serving version to take the classes "
                                      "from (give --classes, or run al bootstrap first)")
        classes = serving.class_names
    storage: dict[str, Any] | None = None
    container = args.container or settings.labeling_container
    if args.storage == "azure":
        key = os.environ.get("AL_LABELING_ACCOUNT_KEY", "")
        if not args.storage_account or not key:
            raise ActiveLearningError("--storage azure needs --storage-account and AL_LABELING_ACCOUNT_KEY (the "
                                      "labeling account's key, which Label Studio's Azure storage requires)")
        storage = {"type": "azure", "title": f"{container} (labeling account)", "container": container,
                   "account_name": args.storage_account, "account_key": key, "presign": False,
                   "use_blob_urls": True, "regex_filter": ""}
    elif args.storage == "localfiles":
        if args.local_path is None:
            raise ActiveLearningError("--storage localfiles needs --local-path")
        storage = {"type": "localfiles", "title": "labeling items", "path": str(args.local_path.resolve()),
                   "use_blob_urls": True, "regex_filter": ""}
    key = os.environ.get("AL_LABEL_STUDIO_WEBHOOK_KEY", "")
    client = LabelStudioClient(url, token, timeout=settings.label_studio_timeout_seconds)
    done = client.ensure_project(
        title=args.title or settings.model_name, class_names=classes,
        project_id=args.project_id or settings.label_studio_project_id,
        description=f"Active learning for model {settings.model_name!r}: the least certain items first.",
        storage=storage, webhook_url=args.webhook_url or None,
        webhook_headers={"x-functions-key": key} if key else {})
    print(f"Label Studio {client.version()} at {url}: project {done.project_id} "
          f"{'created' if done.created else 'updated'} with {len(classes)} classes", file=sys.stderr)
    print(json.dumps({"project_id": done.project_id, "created": done.created, "storage_id": done.storage_id,
                      "webhook_id": done.webhook_id}))
    return 0


def bootstrap(args: argparse.Namespace) -> int:
    """``al bootstrap``: register, deploy and record the first serving version, from the app settings
    in the environment (AL_BACKEND=azure, AL_ADX_*, AL_AML_*, AL_MODEL_NAME)."""
    import shutil
    import tempfile

    from shared.adapters.azureml import AzureMLAdapter, build_ml_client
    from shared.backends import Backend
    from shared.services.bootstrap import bootstrap as run_bootstrap
    from shared.settings import get_settings, require_azure_settings

    settings = get_settings()
    if settings.backend != "azure":
        raise ActiveLearningError("al bootstrap is for the Azure backend (set AL_BACKEND=azure and the AL_ADX_*, "
                                  "AL_AML_* settings); the simulation bootstraps its own model")
    require_azure_settings(settings, ("selector_timer",))
    for name in ("aml_subscription_id", "aml_resource_group", "aml_workspace", "aml_endpoint", "aml_deployment"):
        if not getattr(settings, name):
            raise ActiveLearningError(f"setting AL_{name.upper()} is missing")
    ml = build_ml_client(subscription_id=settings.aml_subscription_id, resource_group=settings.aml_resource_group,
                         workspace=settings.aml_workspace)
    aml = AzureMLAdapter(ml, endpoint=settings.aml_endpoint, deployment=settings.aml_deployment)
    root = Path(__file__).resolve().parents[1]
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None
    with tempfile.TemporaryDirectory() as code:  # only what the scoring script imports is uploaded
        shutil.copytree(root / "scoring", Path(code) / "scoring", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(root / "shared", Path(code) / "shared", ignore=shutil.ignore_patterns("__pycache__"))
        deployment = {"code_dir": code, "scoring_script": "scoring/score.py",
                      "conda_file": str(root / "training" / "environment" / "conda.yaml"), "image": args.image,
                      "instance_type": args.instance_type,
                      "environment_variables": {"AL_COLLECTOR_URL": args.collector_url} if args.collector_url else {}}
        name, _, version = (args.aml_model or "").partition(":")
        if args.aml_model and (name != settings.model_name or not version):
            raise ActiveLearningError(f"--aml-model must be {settings.model_name}:<version> (AL_MODEL_NAME)")
        mv = run_bootstrap(Backend(settings).store, aml, model_name=settings.model_name, model_dir=args.model_dir,
                           aml_version=version or None, class_names=classes, deployment=deployment,
                           timeout_s=args.timeout_minutes * 60)
    print(f"{mv.name}:{mv.version} serves {len(mv.class_names)} classes; recorded in ADX as the serving version")
    return 0


def _sizes(args: argparse.Namespace, dataset: str, n_items: int) -> dict[str, int]:
    """The plan's sizes: what the user gave, else the preset's (built-in sets) or the generic ones.
    When the generic labels (200 initial + 15 rounds x 100) do not fit a user's set and none of
    initial, batch and scored was given, the initial set and the batch shrink to 4 % of the pool
    (in tens, at least 10) and the scored sample to ten batches: the proportions of the digits
    preset, which labels 800 of digits' 1,257-item pool."""
    base = PRESETS.get(dataset, GENERIC)
    sizes = {}
    for key, value in base.items():
        given = getattr(args, key)
        if given is not None:
            sizes[key] = given
        elif isinstance(value, float):
            sizes[key] = int(n_items * value)
        else:
            sizes[key] = value
    pool = n_items - sizes["test_size"] - sizes["val_size"]
    scalable = dataset not in PRESETS and all(getattr(args, k) is None for k in ("initial", "batch", "scored"))
    if scalable and pool > 0 and sizes["initial"] + sizes["rounds"] * sizes["batch"] > pool:
        step = max(10, int(pool * 0.04) // 10 * 10)
        sizes.update(initial=step, batch=step, scored=10 * step)
    for key, value in sizes.items():
        if value < 1:
            raise ActiveLearningError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    return sizes


def simulate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shared.core.strategies import check_strategy
    from shared.sim import report
    from shared.sim.datasets import load_dataset
    from shared.sim.runner import SimConfig, prepare
    from shared.sim.simulate import Plan, check_plan, default_workers, order, run_plan

    console = Console(width=None if sys.stdout.isatty() else 110)
    names = args.strategies.split(",") if args.strategies else [args.default_strategy, *DEFAULT_STRATEGIES]
    strategies = order([check_strategy(n.strip()) for n in names if n.strip()], args.default_strategy)
    if args.seeds < 1:
        raise ActiveLearningError(f"--seeds must be at least 1, got {args.seeds}")
    t0 = time.perf_counter()
    with console.status(f"loading {args.dataset} and computing features…"):
        dataset = load_dataset(args.dataset, seed=0)
        sizes = _sizes(args, dataset.name if args.dataset in PRESETS else "", len(dataset))
        if args.embedding_width is not None:
            if args.embedding_width < 0:
                raise ActiveLearningError(f"--embedding-width must be 0 or more, got {args.embedding_width}")
            sizes["embedding_width"] = args.embedding_width
        config = SimConfig(**sizes)  # type: ignore[arg-type]
        prepared = prepare(dataset, args.out / "work" / "shared-items")
    plan = Plan(strategies, tuple(range(args.seeds)), config, args.out / "work",
                args.workers or default_workers())
    check_plan(prepared, plan)
    console.print(
        f"[bold]{dataset.name}[/]: {len(dataset)} items, {len(dataset.class_names)} classes; "
        f"{config.initial} initial labels, {config.rounds} rounds of {config.batch} picked from "
        f"{config.scored} scored; {len(strategies)} strategies x {args.seeds} seeds "
        f"({time.perf_counter() - t0:.1f}s to prepare)"
    )
    total = len(strategies) * args.seeds * config.rounds
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("rounds"),
                  TimeElapsedColumn(), console=console, disable=args.quiet) as progress:
        task = progress.add_task("rounds", total=total)
        results = run_plan(prepared, plan, lambda: progress.advance(task))
    default = strategies[0]
    cs = report.curves(results, strategies)
    summary = report.summarise(cs, default)
    title = f"{dataset.name}: {config.batch} labels per round from {config.scored} scored, {args.seeds} seeds"
    report.write_files(args.out, summary, cs, results, title)
    _print_table(console, cs, summary)
    secs = sorted(s for r in results for s in r.round_seconds)
    console.print(f"median round {secs[len(secs) // 2]:.2f}s; total {time.perf_counter() - t0:.0f}s; "
                  f"files in {args.out}/: summary.json, curves.png, rounds.csv")
    return 0


def _print_table(console: Console, cs: dict[str, Curve], summary: dict[str, Any]) -> None:
    from rich.table import Table

    names = list(cs)
    table = Table(title="test accuracy (%) per round: mean ± sd over seeds")
    table.add_column("round", justify="right")
    table.add_column("labels", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    first = cs[names[0]]
    for i, labels in enumerate(first.labels):
        table.add_row(str(i), str(labels),
                      *(f"{cs[n].mean[i] * 100:.1f} ± {cs[n].std[i] * 100:.1f}" for n in names))
    console.print(table)
    for n in names:
        s = summary["strategies"][n]
        gain = s.get("gain_over_random_points")
        reach = s["labels_to_random_final"]
        random_labels = cs["random"].labels[-1] if "random" in cs else None
        share = f" ({reach / random_labels:.0%} of random's)" if reach and random_labels else ""
        console.print(
            f"{n:>18}: AULC {s['aulc'] * 100:.2f}  final {s['final_accuracy'] * 100:.2f}"
            + (f"  gain over random {gain:+.2f} pts" if gain is not None else "")
            + f"  labels to random's final: {reach if reach is not None else 'not reached'}{share}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            return simulate(args)
        if args.command == "bootstrap":
            return bootstrap(args)
        if args.command == "labeling":
            return labeling_setup(args)
        if args.command == "label":
            return label(args)
    except ActiveLearningError as exc:
        print(f"al: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("al: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

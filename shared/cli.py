"""The ``al`` command. ``al simulate`` runs the embedded loop with an oracle labeler and reports how
much labeling each strategy saves compared with random picking."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from shared.errors import ActiveLearningError, InvalidInputError

if TYPE_CHECKING:
    from rich.console import Console

    from shared.sim.report import Curve

DEFAULT_STRATEGIES = ("least_confidence", "margin", "entropy", "random")
PRESETS = {  # sizes that fit each built-in dataset (digits has 1,797 items)
    "glyphs67": {"initial": 200, "rounds": 15, "batch": 100, "scored": 1000, "test_size": 2000, "val_size": 1000},
    "digits": {"initial": 50, "rounds": 15, "batch": 50, "scored": 500, "test_size": 360, "val_size": 180},
}
GENERIC = {"initial": 200, "rounds": 15, "batch": 100, "scored": 1000, "test_size": 0.15, "val_size": 0.1}
DESCRIPTION = ("The al command. al simulate runs the active-learning loop offline, with an oracle that knows every "
               "label, and reports how much labeling each selection strategy saves compared with random picking; "
               "al label lets you label your own images in a local Label Studio; al bootstrap makes a model "
               "version the first serving one on Azure; al labeling sets up the model's Label Studio project.")
FITTED_SHARE = 2 / 3  # of a small set's pool, what a fitted plan labels (the digits preset labels 64 %)
FITTED_MIN_ROUNDS = 5  # a fitted plan's batch shrinks below 10 sooner than leave fewer rounds
MAX_WARNINGS = 20  # skipped files named one per line; the rest are counted


class _Parser(argparse.ArgumentParser):
    """argparse's parser; for ``al`` itself and ``al simulate`` a usage error is one line like every other
    error (the other subcommands keep argparse's usage-and-error form)."""

    def error(self, message: str) -> NoReturn:
        if self.prog not in ("al", "al simulate"):
            super().error(message)
        self.exit(2, f"al: error: {message} (see {self.prog} --help)\n")


def _error(what: str, todo: str) -> ActiveLearningError:
    """An error as the CLI prints it: what is wrong, then what to do about it."""
    return ActiveLearningError(f"{what} ({todo})")


def _parser() -> argparse.ArgumentParser:
    from shared.settings import Settings

    default_strategy = Settings.model_fields["strategy"].default
    p = _Parser(prog="al", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser(
        "simulate", help="measure label efficiency offline with an oracle labeler",
        description="Runs the active-learning loop offline: an oracle labels what each strategy picks, round "
        "after round, and the report shows the test accuracy per round and how many labels each strategy needs "
        "to reach random picking's final accuracy. Sizes you do not give come from the data set: built-in sets "
        "have their own, any other set gets 200 initial labels and 15 rounds of 100, fitted to the set when it is "
        "too small for those (a line says so).",
        epilog="example: al simulate --dataset path/to/photos (one sub-folder of images per class)")
    s.add_argument("--dataset", default="glyphs67",
                   help="what to run on: glyphs67 (default, 67 rendered characters), digits (scikit-learn's 8x8 "
                   "digits), a folder with one sub-folder of images per class, or an .npz file holding 'images' or "
                   "'features' and 'labels'")
    s.add_argument("--strategies", default=None, help="comma-separated selection strategies to compare (default: "
                   f"{default_strategy},{','.join(DEFAULT_STRATEGIES)})")
    s.add_argument("--default-strategy", default=default_strategy,
                   help=f"the strategy the summary calls the default (default: {default_strategy})")
    s.add_argument("--seeds", type=int, default=3,
                   help="how many times each strategy runs, each time on another random split (default 3)")
    s.add_argument("--initial", type=int, default=None, help="labels picked at random to train the first model "
                   "(default 200, 50 on digits, fewer on a small set)")
    s.add_argument("--rounds", type=int, default=None,
                   help="rounds of picking after the first model (default 15, fewer on a small set)")
    s.add_argument("--batch", type=int, default=None,
                   help="labels picked per round (default 100, 50 on digits, fewer on a small set)")
    s.add_argument("--scored", type=int, default=None, help="unlabeled items the model scores each round; the "
                   "batch is picked from them (default 1000, 500 on digits, ten batches on a small set)")
    s.add_argument("--test-size", type=int, default=None, help="items set aside to measure accuracy, never "
                   "labeled (default 15%% of the set; 2000 on glyphs67, 360 on digits)")
    s.add_argument("--val-size", type=int, default=None, help="items set aside to decide whether a new model "
                   "replaces the serving one (default 10%% of the set; 1000 on glyphs67, 180 on digits)")
    s.add_argument("--embedding-width", type=int, default=None,
                   help="width of the embedding the model logs with each prediction (default 64; 0 for the whole "
                   "feature vector)")
    s.add_argument("--workers", type=int, default=None,
                   help="runs in parallel (default: the number of cores, at most 8)")
    s.add_argument("--out", type=Path, default=Path("runs/latest"),
                   help="folder for the report: summary.json, curves.png, rounds.csv (default runs/latest)")
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


SIZE_KEYS = ("initial", "rounds", "batch", "scored")


def _opt(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def _sizes(args: argparse.Namespace, dataset: str, n_items: int) -> tuple[dict[str, int], str | None]:
    """The plan's sizes, and when they were fitted to a small set the line that says so.

    Sizes the user gave are kept. The others come from the preset of a built-in set, else from the
    generic plan: 200 initial + 15 rounds x 100 from 1,000 scored, 15 % test and 10 % validation.
    When the generic labels do not fit a user's set, the sizes not given are fitted to the pool (the
    items left after test and validation): the initial set and the batch to 4 % of the pool in tens
    (at least 10; less when not even five such rounds fit), the scored sample to ten batches, and the
    rounds to what labels about two thirds of the pool (at most 15): the proportions of the digits
    preset, which labels 800 of digits' 1,257-item pool."""
    base = PRESETS.get(dataset, GENERIC)
    given = {key: getattr(args, key) for key in base}
    for key, value in given.items():
        if value is not None and value < 1:
            raise _error(f"{_opt(key)} is {value}", f"give {_opt(key)} 1 or more")
    sizes = {key: given[key] if given[key] is not None
             else max(1, int(n_items * value)) if isinstance(value, float) else int(value)
             for key, value in base.items()}
    pool = n_items - sizes["test_size"] - sizes["val_size"]
    before = sizes["initial"] + sizes["rounds"] * sizes["batch"]
    free = [key for key in SIZE_KEYS if given[key] is None]
    if dataset in PRESETS or not free or pool <= 0 or before <= pool:
        return sizes, None
    budget = int(pool * FITTED_SHARE)
    rounds_wanted = given["rounds"] or FITTED_MIN_ROUNDS
    step = max(10, int(pool * 0.04) // 10 * 10)
    if step * (rounds_wanted + 1) > budget:
        step = max(2, budget // (rounds_wanted + 1))
    before_text = f"{_plan_text(sizes['initial'], sizes['rounds'], sizes['batch'])} = {before} labels"
    if given["initial"] is None:
        sizes["initial"] = step
    if given["batch"] is None:
        sizes["batch"] = min(step, given["scored"] or step)
    if given["rounds"] is None:
        sizes["rounds"] = max(1, min(int(GENERIC["rounds"]), (budget - sizes["initial"]) // sizes["batch"]))
    if given["scored"] is None:
        sizes["scored"] = min(10 * sizes["batch"], pool)
    labels = sizes["initial"] + sizes["rounds"] * sizes["batch"]
    kept = [f"{_opt(key)} {sizes[key]}" for key in SIZE_KEYS if key not in free]
    note = (f"sizes fitted to the set: its {pool} items to label (after {sizes['test_size']} test and "
            f"{sizes['val_size']} validation) are too few for {before_text}, so "
            f"{' '.join(f'{_opt(key)} {sizes[key]}' for key in free)}"
            f"{' with your ' + ' '.join(kept) if kept else ''}, which label {labels} "
            f"(give {_either([_opt(key) for key in free])} to choose {'it' if len(free) == 1 else 'them'} yourself)")
    return sizes, note


def _plan_text(initial: int, rounds: int, batch: int) -> str:
    return f"{initial} initial + {rounds} round{'' if rounds == 1 else 's'} x {batch}"


def _either(options: Sequence[str]) -> str:
    return " or ".join(options) if len(options) < 3 else f"{', '.join(options[:-1])} or {options[-1]}"


def _check_sizes(sizes: dict[str, int], n_items: int, given: dict[str, int | None]) -> None:
    """Refuse a plan the set cannot serve, in one line that names what to change, before the set is prepared."""
    initial, rounds, batch, scored = (sizes[key] for key in SIZE_KEYS)
    test, val = sizes["test_size"], sizes["val_size"]
    pool = n_items - test - val
    held = [key for key in ("test_size", "val_size") if given[key] is not None]
    if pool <= 0:
        if held:
            named = " and ".join(f"{_opt(k)} {sizes[k]}" for k in held)
            raise _error(f"{named} {'leave' if len(held) > 1 else 'leaves'} none of the {n_items} items to label",
                         f"lower {_either([_opt(k) for k in held])}")
        raise _error(f"the set has {n_items} items: none left to label after {test} test and {val} validation",
                     "add items to the set")
    if initial < 2:
        raise _error(f"--initial {initial} is too few to train a first model", "give --initial 2 or more")
    need = initial + rounds * batch
    if need > pool:
        limits = {"initial": pool - rounds * batch, "rounds": (pool - initial) // batch,
                  "batch": (pool - initial) // rounds,
                  "test_size": n_items - val - need, "val_size": n_items - test - need}
        changeable = [key for key in (*SIZE_KEYS[:3], *held) if given[key] is not None] or list(SIZE_KEYS[:3])
        lowest = {"initial": 2, "rounds": 1, "batch": 1, "test_size": 1, "val_size": 1}
        fixes = [f"{_opt(key)} {limits[key]} or less" for key in changeable if limits[key] >= lowest[key]]
        todo = (f"give {', or '.join(fixes)}" if fixes
                else "add items to the set" if not any(given[key] is not None for key in (*SIZE_KEYS, *held))
                else f"lower {_either([_opt(key) for key in changeable])}")
        raise _error(f"{_plan_text(initial, rounds, batch)} = {need} labels, more than the pool of {pool} "
                     f"items left after {test} test and {val} validation", todo)
    if batch > scored:
        fixes = ([f"--batch {scored} or less"] if given["batch"] is not None else []) + (
            [f"--scored {batch} or more"] if given["scored"] is not None or given["batch"] is None else [])
        raise _error(f"a batch of {batch} is larger than the {scored} items scored per round",
                     f"give {', or '.join(fixes)}")


def _check_options(args: argparse.Namespace) -> tuple[str, ...]:
    """The strategies, in the report's order, once the options that need no data set are known to be good."""
    from shared.core.strategies import check_strategy, known_strategies
    from shared.errors import SelectionError
    from shared.sim.simulate import order

    def known(name: str, option: str) -> str:
        try:
            return check_strategy(name)
        except SelectionError:
            raise _error(f"unknown strategy {name!r} in {option}",
                         f"choose from {', '.join(known_strategies())}") from None

    if args.seeds < 1:
        raise _error(f"--seeds is {args.seeds}", "give --seeds 1 or more")
    if args.workers is not None and args.workers < 1:
        raise _error(f"--workers is {args.workers}", "give --workers 1 or more, or leave it out for one per core")
    if args.embedding_width is not None and args.embedding_width < 0:
        raise _error(f"--embedding-width is {args.embedding_width}",
                     "give a positive width, or 0 for the whole feature vector")
    default = known(args.default_strategy.strip(), "--default-strategy")
    names = [n.strip() for n in args.strategies.split(",")] if args.strategies else [default, *DEFAULT_STRATEGIES]
    strategies = order(list(dict.fromkeys(known(n, "--strategies") for n in names if n)), default)
    if not strategies:
        raise _error(f"--strategies {args.strategies!r} names no strategy", "give a comma-separated list, "
                     "e.g. --strategies margin,random")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _error(f"cannot make the --out folder {args.out}: {exc.strerror or exc}",
                     "give --out a folder you can write to") from None
    return strategies


def simulate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shared.sim import report
    from shared.sim.datasets import Skipped, load_dataset
    from shared.sim.runner import SimConfig, prepare
    from shared.sim.simulate import Plan, check_plan, default_workers, run_plan

    console = Console(width=None if sys.stdout.isatty() else 110)
    strategies = _check_options(args)
    t0 = time.perf_counter()
    skipped: list[Skipped] = []  # heard of as met, so they are named even when a class ends up with too few
    try:
        with console.status(f"loading {args.dataset}…"):
            dataset = load_dataset(args.dataset, seed=0, on_skip=skipped.append)
    finally:  # after the status line is gone, which would wrap them
        for file in skipped[:MAX_WARNINGS]:
            print(f"al: warning: skipped {file.path}: {file.reason}", file=sys.stderr)
        if len(skipped) > MAX_WARNINGS:
            print(f"al: warning: skipped {len(skipped) - MAX_WARNINGS} more files that are not readable images",
                  file=sys.stderr)
    sizes, note = _sizes(args, dataset.name if args.dataset in PRESETS else "", len(dataset))
    _check_sizes(sizes, len(dataset), {key: getattr(args, key) for key in (*SIZE_KEYS, "test_size", "val_size")})
    if note:
        console.print(note, soft_wrap=True, markup=False, highlight=False)
    if args.embedding_width is not None:
        sizes["embedding_width"] = args.embedding_width
    config = SimConfig(**sizes)  # type: ignore[arg-type]
    with console.status(f"computing the features of {len(dataset)} items…"):
        prepared = prepare(dataset, args.out / "work" / "shared-items")
    plan = Plan(strategies, tuple(range(args.seeds)), config, args.out / "work",
                args.workers or default_workers())
    check_plan(prepared, plan)  # _check_sizes has said anything this would
    n_skipped = len(dataset.skipped)
    skipped_text = f", {n_skipped} file{'' if n_skipped == 1 else 's'} skipped" if n_skipped else ""
    console.print(
        f"[bold]{dataset.name}[/]: {len(dataset)} items, {len(dataset.class_names)} classes{skipped_text}; "
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


def _error_text(exc: ActiveLearningError) -> str:
    """The error said once: an InvalidInputError's message with only the problems it does not already say
    (``str()`` appends every problem, and most repeat the message)."""
    if not isinstance(exc, InvalidInputError):
        return str(exc)
    extra = [str(p) for p in exc.problems if p.reason != exc.message and p.reason not in exc.message]
    return f"{exc.message}: {'; '.join(dict.fromkeys(extra))}" if extra else exc.message


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
        print(f"al: error: {_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("al: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

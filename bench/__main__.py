"""`make bench`: python -m bench [all|efficiency|selection|collector|labels|suite] [--sizes 1000000,10000000]
[--embedding-dim 64]

Prints the figures the performance targets are judged by and writes runs/bench/figures-<which>.json
(for ``selection``, exactly the selection bench's document: see bench/selection_scale.py).
``suite`` (not part of ``all``: about 27 minutes on 2 cores) runs the strategy suite and writes
runs/bench/suite.json; ``--datasets``, ``--strategies``, ``--reuse`` narrow it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

PARTS = ("efficiency", "selection", "collector", "labels")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("which", nargs="?", default="all", choices=("all", *PARTS, "suite"))
    p.add_argument("--sizes", default="1000000,10000000", help="prediction counts for the selection bench")
    p.add_argument("--embedding-dim", type=int, default=64,
                   help="embedding width for the selection bench (what production logs by default)")
    p.add_argument("--datasets", default=None, help="suite: comma-separated subset of the data sets")
    p.add_argument("--strategies", default=None, help="suite: comma-separated strategies (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="suite: seeds per strategy")
    p.add_argument("--reuse", action="store_true", help="suite: reuse curves already in runs/bench/suite/")
    args = p.parse_args()
    if args.which == "suite":
        from bench import suite

        suite.main(datasets=tuple(args.datasets.split(",")) if args.datasets else suite.DATASETS,
                   strategies=tuple(args.strategies.split(",")) if args.strategies else None,
                   seeds=args.seeds, reuse=args.reuse)
        return
    todo = PARTS if args.which == "all" else (args.which,)
    figures: dict[str, object] = {}
    if "efficiency" in todo:
        from bench import label_efficiency

        figures["label_efficiency"] = label_efficiency.main()
    if "collector" in todo:
        from bench import collector

        figures["collector"] = collector.main()
    if "labels" in todo:
        from bench import label_export

        figures["label_export"] = label_export.main()
    if "selection" in todo:
        from bench import selection_scale

        figures["selection"] = selection_scale.main(tuple(int(s) for s in args.sizes.split(",")),
                                                    args.embedding_dim)
    out = Path("runs/bench")
    out.mkdir(parents=True, exist_ok=True)
    doc = figures["selection"] if args.which == "selection" else figures
    (out / f"figures-{args.which}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"figures written to {out / f'figures-{args.which}.json'} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()

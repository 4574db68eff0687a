"""`make bench`: python -m bench [selection|efficiency|all] [--sizes 1000000,10000000]"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("which", nargs="?", default="all", choices=("all", "selection", "efficiency"))
    p.add_argument("--sizes", default="1000000,10000000", help="prediction counts for the selection bench")
    args = p.parse_args()
    figures: dict[str, object] = {}
    if args.which in ("all", "efficiency"):
        from bench import label_efficiency

        figures["label_efficiency"] = label_efficiency.main()
    if args.which in ("all", "selection"):
        from bench import selection_scale

        figures["selection"] = selection_scale.main(tuple(int(s) for s in args.sizes.split(",")))
    out = Path("runs/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"figures-{args.which}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {out / f'figures-{args.which}.json'} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()

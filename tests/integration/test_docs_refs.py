"""What the docs and comments point at exists: the ADX scripts they name, the deploy.md steps they
cite (issue 20, item 9: a renamed script and a renumbered step went stale unnoticed)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy.md"
TEXTS = [*ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("infra/**/*.md"),
         *ROOT.glob(".github/workflows/*.yml"), *ROOT.glob("infra/**/*.bicep"), *ROOT.glob("infra/hooks/*.sh")]


def test_every_adx_script_named_in_the_docs_exists():
    scripts = {p.name for p in (ROOT / "infra" / "adx").glob("*.kql")}
    named = {(t.name, m) for t in TEXTS for m in re.findall(r"\b\d\d-[a-z-]+\.kql\b", t.read_text())}
    missing = sorted((where, m) for where, m in named if m not in scripts)
    assert not missing, missing


def test_every_deploy_step_cited_is_the_step_about_that_topic():
    headings = dict(re.findall(r"^## (\d+)\. (.+)$", DEPLOY.read_text(), re.MULTILINE))
    workflow = (ROOT / ".github" / "workflows" / "train.yml").read_text()
    cited = re.findall(r"docs/deploy\.md, step (\d+)", workflow)
    assert cited, "the workflow cites the step that gives it its sign-in"
    assert all("OIDC" in headings.get(n, "") for n in cited), (cited, headings)
    for text in TEXTS:
        for n in re.findall(r"docs/deploy\.md,? step (\d+)", text.read_text()):
            assert n in headings, (text.name, n)

"""Copy the CRDs from crds/ into the Helm chart as templates (`make chart-crds`).

Why templates and not the chart's `crds/` folder: Helm installs a chart's `crds/` once and never
upgrades or deletes them. As templates they are upgraded by `helm upgrade`; the annotation
`helm.sh/resource-policy: keep` makes `helm uninstall` leave them (deleting a CRD deletes every
Integration, run and sealed secret of every tenant). `crds.install=false` skips them, for the
second and later tenants of a cluster (docs/chart.md).

    python -m devkit.chart          # rewrite charts/docrelay/templates/crds/
    python -m devkit.chart --check  # exit 1 if the copies are stale (CI, tests/unit/test_chart.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = REPO_ROOT / "crds"
TARGET = REPO_ROOT / "charts" / "docrelay" / "templates" / "crds"

GUARD_OPEN = "{{- if .Values.crds.install }}\n"
GUARD_CLOSE = "{{- end }}\n"
HEADER = "# Copied from crds/{name} by `make chart-crds`; do not edit (tests/unit/test_chart.py).\n"
KEEP = (
    "  annotations:\n"
    "    # helm uninstall leaves the CRD (and so every tenant's objects) in place.\n"
    "    helm.sh/resource-policy: keep\n"
)


def chart_copy(name: str, text: str) -> str:
    """The template for one CRD: guarded, annotated `keep`, otherwise byte for byte the same."""
    if "{{" in text:
        raise ValueError(f"crds/{name} contains '{{{{', which Helm would read as a template")
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    inserted = False
    for line in lines:
        if line.startswith("#") and not out:
            continue  # the generator's header; ours replaces it
        out.append(line)
        if not inserted and line.startswith("  name:") and out[-2].startswith("metadata:"):
            out.append(KEEP)
            inserted = True
    if not inserted:
        raise ValueError(f"crds/{name}: no 'metadata:' followed by '  name:' to annotate")
    return HEADER.format(name=name) + GUARD_OPEN + "".join(out) + GUARD_CLOSE


def expected() -> dict[str, str]:
    return {
        path.name: chart_copy(path.name, path.read_text()) for path in sorted(SOURCE.glob("*.yaml"))
    }


def stale() -> list[str]:
    """Names of the copies that differ from what crds/ gives (missing or extra ones too)."""
    want = expected()
    have = (
        {path.name: path.read_text() for path in TARGET.glob("*.yaml")} if TARGET.is_dir() else {}
    )
    return sorted(name for name in want.keys() | have.keys() if want.get(name) != have.get(name))


def write() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    want = expected()
    for path in TARGET.glob("*.yaml"):
        if path.name not in want:
            path.unlink()
    for name, text in want.items():
        (TARGET / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.chart", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        if names:
            print(
                f"chart CRDs are stale: {', '.join(names)}; run `make chart-crds`", file=sys.stderr
            )
            return 1
        print("chart CRDs are current")
        return 0
    write()
    print(f"copied {len(expected())} CRDs into {TARGET.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

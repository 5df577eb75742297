"""Run a benchmark script on this tree and on an earlier revision, taking turns, and print both.

Each benchmark prints ratios measured side by side within its own run; this runs it on both
revisions alternately (the machine's slow spells fall on both) so a change can be shown not to
make it slower. The other revision is checked out in a temporary git worktree and imported from
there (``PYTHONPATH``); its own copy of the benchmark script runs.

    python benchmarks/compare_revisions.py HEAD~1 benchmarks/upscale_speed.py --sizes 128 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(tree: Path, script: str, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, str(tree / script), *args], cwd=tree, env=env, capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"{script} failed on {tree}:\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="the earlier revision, e.g. HEAD~1 or a commit")
    parser.add_argument("script", help="the benchmark, relative to the repository root")
    parser.add_argument("--rounds", type=int, default=2, help="turns each revision takes")
    args, rest = parser.parse_known_args()
    commit = subprocess.run(["git", "rev-parse", "--short", args.revision], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for r in range(args.rounds):
                for label, tree in ((f"{commit} (before)", other), ("this tree (after)", ROOT)):
                    print(f"=== round {r + 1}, {label}: {args.script} {' '.join(rest)}", flush=True)
                    print(run(tree, args.script, rest), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()

"""Whether two studies' results files hold the same numbers: every field of
`report/results.json` compared, except where a run happened (directories, the command line,
the commit's state) and how long it took. Prints each difference; exits 1 if there is one.

    python bench/same_results.py runs/before runs/after
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Fields that name where or when a run happened, not what it computed.
IGNORED = {"dir", "argv", "git_dirty", "git_commit", "wall_s", "created", "python_executable", "hostname"}


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) if k not in IGNORED
                for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    loaded = []
    for run in sys.argv[1:]:
        path = Path(run) / "report" / "results.json"
        if not path.is_file():
            print(f"error: {path} does not exist (run the study and its report first)", file=sys.stderr)
            return 2
        loaded.append(json.loads(path.read_text()))
    diffs = differences(*loaded)
    print("\n".join(diffs) if diffs else f"same numbers: {sys.argv[1]} and {sys.argv[2]}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())

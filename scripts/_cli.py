"""Shared CLI plumbing: bad input or options end in one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jaxlstm.errors import InputError  # noqa: E402


def run(main, argv: list[str] | None = None) -> None:
    try:
        main(argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

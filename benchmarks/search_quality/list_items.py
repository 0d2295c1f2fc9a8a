"""List the items the project's chunker makes of Rust files: ``kind qualname  lines``.

For writing and checking evaluation questions: the ``qualname`` of an item-level answer
must be exactly what :func:`rcm_dask.chunking.chunk_source` gives for its file.

    python benchmarks/search_quality/list_items.py /usr/share/cargo/registry/regex-1.7.1 src/exec.rs
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from rcm_dask.chunking import chunk_source
from rcm_dask.records import SourceFile


def items_of(root: Path, rel: str) -> list[tuple[str, str, int, int]]:
    """(kind, qualname, start_line, end_line) of every chunk of one file, in order."""
    data = (root / rel).read_bytes()
    text = data.decode("utf-8")
    src = SourceFile(rel, len(data), None, hashlib.sha256(data).hexdigest(), text)
    return [(c.kind, c.qualname, c.start_line, c.end_line) for c in chunk_source(src)]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    root = Path(argv[0])
    for rel in argv[1:]:
        print(f"# {rel}")
        for kind, qualname, start, end in items_of(root, rel):
            print(f"{kind:9} {qualname}  {start}-{end}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

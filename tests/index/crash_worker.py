"""Ingestion worker for the crash tests: the pipeline's protocol (plan -> add -> flush -> mark_done).

``python -m tests.index.crash_worker INDEX_DIR DOCS PAGES_PER_DOC [--lock-timeout S]``. Vectors are a pure
function of (document, page), so a page embedded twice is identical. Documents whose number is a multiple of 7
change content on every run (so old points are replaced while the process may be killed).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from polymodal.index.embedded import EmbeddedMultiVectorIndex
from polymodal.index.manifest import Manifest

DIM, TOKENS = 16, 12


def vectors(content_hash: str, page: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{content_hash}:{page}".encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal((TOKENS, DIM)).astype(np.float32)


def main() -> None:
    directory, docs, pages = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    run = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    index = EmbeddedMultiVectorIndex(
        directory / "index",
        dim=DIM,
        embedder_id="crash",
        min_train_tokens=3_000,
        max_segments=4,
        lock_timeout=30,
    )
    manifest = Manifest(directory / "manifest.sqlite")
    leftover = manifest.pending_deletions()
    if leftover:
        index.delete(leftover)
        index.flush()
        manifest.confirm_deleted(leftover)
    for doc in range(docs):
        print(f"doc {doc}", flush=True)  # progress, so the crash tests can kill mid-ingest on any machine
        content = f"doc{doc}-v{run if doc % 7 == 0 else 0}"
        plan = manifest.plan(f"doc{doc}.pdf", content, pages)
        if plan.delete:
            index.delete(list(plan.delete))
        for start in range(0, len(plan.todo), 8):
            batch = plan.todo[start : start + 8]
            index.add(
                [item.point_id for item in batch],
                [vectors(content, item.number) for item in batch],
                [{"document": f"doc{doc}.pdf", "page": item.number} for item in batch],
            )
            index.flush()
            manifest.mark_done([item.point_id for item in batch])
        if plan.delete:
            index.flush()
            manifest.confirm_deleted(plan.delete)
    index.close()
    manifest.close()
    print("complete")


if __name__ == "__main__":
    main()

from __future__ import annotations

from pathlib import Path

import pytest

from polymodal.errors import StoreError
from polymodal.index.manifest import Manifest, content_hash_of, point_id


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    with Manifest(tmp_path / "m.sqlite") as m:
        yield m


def test_point_id_is_deterministic_uuid() -> None:
    assert point_id("abc", 1) == point_id("abc", 1)
    assert point_id("abc", 1) != point_id("abc", 2) != point_id("abd", 2)
    assert len(point_id("abc", 1)) == 36


def test_plan_then_done_skips_everything(manifest: Manifest) -> None:
    plan = manifest.plan("a.pdf", "h1", 3)
    assert [item.number for item in plan.todo] == [1, 2, 3] and not plan.delete
    manifest.mark_done([item.point_id for item in plan.todo[:2]])
    again = manifest.plan("a.pdf", "h1", 3)
    assert [item.number for item in again.todo] == [3] and again.already_done == 2
    manifest.mark_done([again.todo[0].point_id])
    assert manifest.plan("a.pdf", "h1", 3).up_to_date
    assert manifest.done_ids() == {point_id("h1", n) for n in (1, 2, 3)}


def test_changed_file_replaces_old_points(manifest: Manifest) -> None:
    first = manifest.plan("a.pdf", "h1", 2)
    manifest.mark_done([i.point_id for i in first.todo])
    changed = manifest.plan("a.pdf", "h2", 1)
    assert set(changed.delete) == {i.point_id for i in first.todo}
    assert [i.point_id for i in changed.todo] == [point_id("h2", 1)]
    # interrupted before the deletion was confirmed: still listed
    assert set(manifest.pending_deletions()) == set(changed.delete)
    manifest.confirm_deleted(changed.delete)
    manifest.mark_done([changed.todo[0].point_id])
    assert manifest.pending_deletions() == []
    assert manifest.done_ids() == {point_id("h2", 1)}
    assert manifest.stats().stale == 0


def test_shared_content_is_not_deleted_while_referenced(manifest: Manifest) -> None:
    a = manifest.plan("a.pdf", "same", 1)
    b = manifest.plan("copy-of-a.pdf", "same", 1)
    manifest.mark_done([a.todo[0].point_id, b.todo[0].point_id])
    assert manifest.forget("a.pdf") == []  # copy-of-a.pdf still uses the point
    assert manifest.forget("copy-of-a.pdf") == [point_id("same", 1)]


def test_removed_and_forget_for_sync(manifest: Manifest) -> None:
    for name in ("a.pdf", "b.pdf"):
        plan = manifest.plan(name, name, 2)
        manifest.mark_done([i.point_id for i in plan.todo])
    assert manifest.removed(["a.pdf"]) == ["b.pdf"]
    gone = manifest.forget("b.pdf")
    assert set(gone) == {point_id("b.pdf", 1), point_id("b.pdf", 2)}
    manifest.confirm_deleted(gone)
    assert [d.document for d in manifest.documents()] == ["a.pdf"]
    assert manifest.removed(["a.pdf"]) == []


def test_failures_are_recorded_with_reason(manifest: Manifest) -> None:
    manifest.mark_failed("broken.pdf", "encrypted PDF")
    plan = manifest.plan("ok.pdf", "h", 2)
    manifest.mark_failed("ok.pdf", "render timeout", point_ids=[plan.todo[1].point_id])
    docs = {d.document: d for d in manifest.documents()}
    assert docs["broken.pdf"].status == "failed" and docs["broken.pdf"].reason == "encrypted PDF"
    assert docs["ok.pdf"].failed == 1
    stats = manifest.stats()
    assert (stats.documents, stats.failed_documents, stats.failed, stats.pending) == (2, 1, 1, 1)
    # a failed item is planned again
    assert [i.number for i in manifest.plan("ok.pdf", "h", 2).todo] == [1, 2]


def test_persists_across_connections(tmp_path: Path) -> None:
    with Manifest(tmp_path / "m.sqlite") as m:
        plan = m.plan("a.pdf", "h", 1)
        m.mark_done([plan.todo[0].point_id])
    with Manifest(tmp_path / "m.sqlite") as m:
        assert m.plan("a.pdf", "h", 1).up_to_date
        assert m._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_content_hash_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    assert content_hash_of(f) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    with pytest.raises(StoreError, match=r"missing\.bin"):
        content_hash_of(tmp_path / "missing.bin")
    with pytest.raises(StoreError, match="cannot open manifest"):
        Manifest(f / "nested.sqlite")

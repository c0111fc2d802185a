"""`enrich prune`: whole complete trees that completed before the cutoff, never a pending tree, never part of one."""

from __future__ import annotations

import datetime as dt

from models import EnrichmentLog, load_settings, utcnow
from models.retention import prune
from workers.cli import main

Log = EnrichmentLog
NOW = utcnow()


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def make_tree(name: str, created_days_ago: float, children: list[tuple[str, float]], root_status="success",
              root_completed: float = None) -> str:
    """A root and children [(status, completed N days ago)]; pending children have no completion."""
    created = days_ago(created_days_ago)
    root_done = days_ago(root_completed if root_completed is not None else created_days_ago - 0.001)
    Log.create(job_id=name, operation="check:album-enrichment", is_root_job=True, status=root_status,
               created_at=created, updated_at=root_done,
               completed_at=None if root_status in ("queued", "running", "retrying") else root_done)
    for i, (status, done) in enumerate(children):
        pending = status in ("queued", "running", "retrying")
        Log.create(job_id=f"{name}-child-{i}", parent_job_id=name, operation="enrichment:album", status=status,
                   created_at=created, updated_at=days_ago(done), completed_at=None if pending else days_ago(done))
    return name


def tree_sizes() -> dict[str, int]:
    sizes: dict[str, int] = {}
    for job_id, parent in Log.select(Log.job_id, Log.parent_job_id).tuples():
        key = parent or job_id
        sizes[key] = sizes.get(key, 0) + 1
    return sizes


def build_trees() -> dict[str, int]:
    make_tree("old-done", 40, [("success", 39.9), ("failed", 39.9), ("lost", 39.8)], root_status="degraded")
    make_tree("old-root-late-child", 40, [("success", 10)])  # completed 10 days ago: too recent
    make_tree("old-with-queued", 45, [("success", 44), ("queued", 0)])
    make_tree("old-with-retrying", 45, [("retrying", 1)])
    make_tree("old-root-queued", 50, [], root_status="queued")
    make_tree("recent", 2, [("success", 1)])
    for i in range(5):  # several batches' worth of old complete trees
        make_tree(f"old-{i}", 60 + i, [("success", 59), ("no_data", 59)])
    Log.create(job_id=None, operation="enrichment:track", is_root_job=True, status="running",
               created_at=days_ago(400), updated_at=days_ago(400))  # legacy: goes by created_at
    Log.create(job_id=None, operation="enrichment:track", is_root_job=True, status="success",
               created_at=days_ago(3), updated_at=days_ago(3))
    return tree_sizes()


def test_prune_deletes_only_whole_complete_trees_completed_before_the_cutoff(db):
    before = build_trees()
    dry = prune(days_ago(30), dry_run=True, batch_roots=2)
    assert Log.select().count() == sum(before.values())  # a dry run deletes nothing

    report = prune(days_ago(30), batch_roots=2)
    assert (report.trees, report.rows, report.legacy_rows) == (dry.trees, dry.rows, dry.legacy_rows)
    after = tree_sizes()
    deleted = {"old-done"} | {f"old-{i}" for i in range(5)}
    assert report.trees == 6 and report.legacy_rows == 1
    assert report.rows == sum(before[t] for t in deleted) + 1
    assert not deleted & set(after)
    for kept in ("old-root-late-child", "old-with-queued", "old-with-retrying", "old-root-queued", "recent"):
        assert after[kept] == before[kept], kept  # whole, root and every child
    assert report.batches >= 6


def test_enrich_prune_prints_what_it_deleted_and_dry_run_changes_nothing(db, capsys):
    build_trees()
    count = Log.select().count()
    assert main(["prune", "--older-than", "30d", "--dry-run"], settings=load_settings()) == 0
    assert capsys.readouterr().out.startswith("would delete 6 trees and 20 rows (1 legacy, 0 orphaned) completed before")
    assert Log.select().count() == count
    assert main(["prune", "--older-than", "30d"], settings=load_settings()) == 0
    assert capsys.readouterr().out.startswith("deleted 6 trees and 20 rows (1 legacy, 0 orphaned) completed before")
    assert Log.select().count() == count - 20
    # Now the recent ones too, but never the pending ones.
    assert main(["prune", "--older-than", "1h"], settings=load_settings()) == 0
    assert capsys.readouterr().out.startswith("deleted 2 trees and 5 rows (1 legacy, 0 orphaned)")
    assert set(tree_sizes()) == {"old-with-queued", "old-with-retrying", "old-root-queued"}


def test_a_pending_child_written_after_the_dry_run_keeps_its_tree(db):
    make_tree("tree", 40, [("failed", 39), ("success", 39)])
    assert prune(days_ago(30), dry_run=True).trees == 1
    # `enrich resend` puts the failed child back to queued before the prune runs.
    Log.update(status="queued", completed_at=None).where(Log.job_id == "tree-child-0").execute()
    assert prune(days_ago(30)).trees == 0
    assert tree_sizes() == {"tree": 3}


def test_ended_children_whose_root_row_is_gone_are_pruned_by_age(db, capsys):
    make_tree("whole", 40, [("success", 39)])
    make_tree("kept", 2, [("success", 1)])
    for name, status, done in [("old-ended", "failed", 40), ("old-pending", "running", 40), ("recent", "success", 1)]:
        Log.create(job_id=f"orphan-{name}", parent_job_id="deleted-root", operation="enrichment:track", status=status,
                   completed_at=None if status == "running" else days_ago(done))
    Log.update(updated_at=days_ago(40)).where(Log.job_id == "orphan-old-pending").execute()
    Log.create(job_id="waiting-for-root", parent_job_id="root-not-written-yet", operation="enrichment:track",
               status="success", completed_at=NOW)  # a root's row may land after its child's

    dry = prune(days_ago(30), dry_run=True, batch_roots=1)
    assert (dry.trees, dry.orphan_rows) == (1, 1)
    report = prune(days_ago(30), batch_roots=1)
    assert (report.trees, report.rows, report.orphan_rows) == (1, 3, 1)
    left = {r.job_id for r in Log.select()}
    assert "orphan-old-ended" not in left and not {"whole", "whole-child-0"} & left
    assert {"orphan-old-pending", "orphan-recent", "waiting-for-root", "kept", "kept-child-0"} <= left
    Log.update(status="lost", completed_at=days_ago(31)).where(Log.job_id == "orphan-old-pending").execute()
    assert main(["prune", "--older-than", "30d"], settings=load_settings()) == 0  # once the sweeper ended it
    assert capsys.readouterr().out.startswith("deleted 0 trees and 1 row (0 legacy, 1 orphaned) completed before")

"""Every snapshot the slave keeps is consistent: no row names an upload or a commit it lacks.

GitLab writes a file, then a row naming it (an upload and its row; a push and a row with its
commit). A snapshot taken at one instant (btrfs) holds the file of every row it holds. A live
copy of the files followed by PostgreSQL recovered to ``pg_backup_stop`` (the fallback) holds
rows committed after the copy passed their files, unless the files are copied again after the
stop. So, on both paths: a writer (``consistency_writer``) runs in a GitLab on the master
while the sidecars sync; then the sender stops and every snapshot the slave keeps (not only the
newest) is copied, PostgreSQL started on the copy, and every row checked (``snapshot_check``).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gitlab_sync.snapshots import name_time
from tests.integration.sidecar.consistency_writer import (
    Writer,
    Written,
    require_images,
    start_gitlab,
)
from tests.integration.sidecar.snapshot_check import REPOSITORIES, UPLOADS, Checker, Verdict
from tests.integration.sidecar.sync_pair import FILESYSTEMS, Pair, sync_pair, wait_for

pytestmark = pytest.mark.integration

KEEP = 6  # the slave's SNAPSHOT_KEEP_MAX: the snapshots checked, all taken under the writer's load


@dataclass
class Loaded:
    """A pair whose slave keeps KEEP snapshots, all taken while the writer ran; the sender is
    stopped, so the set checked is the set kept."""

    pair: Pair
    checker: Checker
    written: Written
    passes: str  # the master's complete passes: how many, how long, how PostgreSQL was copied
    ready_s: float  # from nothing to a GitLab on the pair, writing


_PASS = re.compile(r"pass \S+ \(\w+\) ok in ([\d.]+) s(?:.*, PostgreSQL (\w+))?")


def _passes(logs: str) -> str:
    """The master's complete passes, from its log: for the figures, not for the verdict."""
    found = _PASS.findall(logs)
    if not found:
        return "no complete pass logged"
    seconds = statistics.median(float(s) for s, _ in found)
    modes = "/".join(sorted({mode or "none" for _, mode in found}))
    return f"{len(found)} passes (median {seconds:.1f} s, PostgreSQL {modes})"


@pytest.fixture(scope="module", params=FILESYSTEMS)
def loaded(request: pytest.FixtureRequest) -> Iterator[Loaded]:
    require_images()
    slave_env = {"SNAPSHOT_KEEP_MAX": str(KEEP)}
    begun = time.monotonic()
    with sync_pair(fs=request.param, slave_env=slave_env, start=False) as pair:
        gitlab = start_gitlab(pair)
        checker = Checker(pair)
        writer = Writer(gitlab, moves=request.param == "btrfs")  # the fallback's gap: the script
        writer.start()
        ready_s = round(time.monotonic() - begun, 1)
        since = wait_for(writer.loaded, 60, "a first upload and a first push", every=0.2)
        pair.master.sync("start")

        def all_loaded() -> bool:
            names = checker.names()
            return len(names) >= KEEP and name_time(names[0]).timestamp() > since

        wait_for(all_loaded, 240, f"{KEEP} snapshots taken under the writer's load", every=0.5)
        written = writer.stop()
        pair.stop_sending()
        passes = _passes(pair.master.logs())
        yield Loaded(pair, checker, written, passes, ready_s)


def test_every_snapshot_the_slave_keeps_holds_what_its_rows_name(loaded: Loaded) -> None:
    started = time.monotonic()
    names = loaded.checker.names()
    assert len(names) == KEEP, names
    verdicts: list[Verdict] = []
    for name in names:
        verdicts.append(loaded.checker.check(name))
        print(verdicts[-1].line())
    rows = sum(v.inspection.uploads + v.inspection.commits for v in verdicts)
    dangling = [len(v.inspection.dangling) for v in verdicts]
    summary = (
        f"{loaded.pair.fs}: {sum(map(bool, dangling))} of {len(verdicts)} snapshots hold rows "
        f"naming what they lack, {sum(dangling)} dangling rows of {rows} "
        f"(per snapshot {dangling}); ready in {loaded.ready_s} s, writer: {loaded.written}, "
        f"{loaded.passes}; checks took {time.monotonic() - started:.1f} s"
    )
    print(summary)
    # Not vacuous: every snapshot began after an upload and a push were acknowledged.
    assert all(v.inspection.uploads and v.inspection.commits for v in verdicts), summary
    broken = [v.line() for v in verdicts if v.inspection.dangling]
    assert not any(dangling), "\n".join([summary, *broken])


def test_the_check_finds_a_lost_upload_a_changed_one_a_lost_commit_and_a_lost_tree(
    loaded: Loaded,
) -> None:
    """The check itself: a copy broken on purpose fails it, each row with its reason."""
    checker = loaded.checker
    newest = checker.names()[-1]
    copy, _prepared = checker.copy(newest, "broken")
    before = checker.inspect(copy)
    fine = [row for row in before.rows if row.verdict == "ok"]
    lost, changed = [row.names for row in fine if row.kind == "upload"][:2]
    commits = [row.names.split(" ") for row in fine if row.kind == "commit"]
    assert len(commits) >= 2, before
    (project, commit), (other, treed) = commits[0], commits[-1]
    checker.in_copy(["rm", f"{copy}/{UPLOADS}/{lost}"])
    checker.in_copy(["sh", "-c", f"echo changed > {copy}/{UPLOADS}/{changed}"])

    def loose(project: str, sha: str) -> str:
        return f"{copy}/{REPOSITORIES}/{project}.git/objects/{sha[:2]}/{sha[2:]}"

    git = ["git", "-c", "safe.directory=*", "--git-dir", f"{copy}/{REPOSITORIES}/{other}.git"]
    tree = checker.in_copy([*git, "rev-parse", f"{treed}^{{tree}}"]).strip()
    checker.in_copy(["rm", loose(project, commit), loose(other, tree)])
    after = checker.inspect(copy)
    broken = {(r.kind, r.names, r.verdict) for r in set(after.dangling) - set(before.dangling)}
    assert broken == {
        ("upload", lost, "missing"),
        ("upload", changed, "changed"),
        ("commit", f"{project} {commit}", "missing"),
        ("commit", f"{other} {treed}", "incomplete"),
    }

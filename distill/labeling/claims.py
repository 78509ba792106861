"""The local engine's share of the work: one process, or each torchrun / accelerate rank,
claims shards through lease files (`labeling.leases`) until none is left, instead of taking
a fixed k ≡ rank (mod N). A slow rank holds at most the shards it is working on; a killed
rank's lease expires and another rank takes its shard over; whoever commits the last shard
finalizes under the finalization lease. No rank waits at a barrier for another: a rank with
nothing left to claim waits only while some lease is live, which a dead rank's is not for
long.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from tqdm import tqdm

from distill import run_folder
from distill.labeling import leases
from distill.labeling.shard_work import LabelRun, ShardRecord, label_shards


def _claims(out: Path, total: int, limit: int | None, seconds: float) -> Iterator[leases.Lease]:
    """One pass over the run's shards: the lease of each one not done that this process
    could claim (free, or its holder's lease expired), up to `limit`."""
    claimed = 0
    for shard in range(total):
        if limit is not None and claimed >= limit:
            return
        if run_folder.labels_path(out, shard).exists():
            continue
        lease = leases.claim(out, leases.lease_name(shard), seconds)
        if lease is None:
            continue
        if run_folder.labels_path(out, shard).exists():  # committed while we claimed it
            lease.release(every_attempt=False)
            continue
        claimed += 1
        yield lease


def _claimable(out: Path, total: int, seconds: float) -> bool:
    """Whether a shard not done has no live lease (its holder died, or gave it up)."""
    done = run_folder.completed_shards(out)
    for shard in range(total):
        if shard not in done:
            held = leases.attempts(out, leases.lease_name(shard))
            if not held or not leases.is_live(held[-1][1], seconds):
                return True
    return False


def _finalized_since(out: Path, since: float) -> bool:
    manifest = Path(out) / run_folder.MANIFEST_FILE
    newest = max((path.stat().st_mtime for path in run_folder.label_files(out)), default=0.0)
    return manifest.exists() and manifest.stat().st_mtime >= max(since, newest)


def label_claimed(run: LabelRun, total: int, limit: int | None, bar: tqdm | None,
                  began: float, seconds: float = leases.LEASE_SECONDS
                  ) -> tuple[list[ShardRecord], leases.Lease | None]:
    """Claim and label shards until the run is done (or `limit` shards are labeled here).
    Returns this process's ledger and, if this process is to finalize, the finalization
    lease (else None). `began`: when this call started (wall clock)."""
    out, ledger = run.out, []
    poll = min(1.0, seconds / 4)
    while True:
        left = None if limit is None else limit - len(ledger)
        with closing(label_shards(run, _claims(out, total, left, seconds), bar)) as shards:
            for record in shards:
                ledger.append(record)
                # still holding this shard's lease: a waiting rank does not finalize meanwhile
                if len(run_folder.completed_shards(out)) == total:
                    return ledger, leases.claim(out, leases.FINAL, seconds)
        if limit is not None and len(ledger) >= limit:
            return ledger, None
        while len(run_folder.completed_shards(out)) < total and not _claimable(out, total, seconds):
            time.sleep(poll)  # others hold every shard left: wait for them, or for one to die
        if len(run_folder.completed_shards(out)) == total:
            break
    # Every shard is done, the last by another process: it finalizes, unless it dies first
    # (or none did: a rerun of a finished run finalizes again, as it always has).
    while leases.any_live(out, seconds):
        time.sleep(poll)
    if _finalized_since(out, began):
        return ledger, None
    return ledger, leases.claim(out, leases.FINAL, seconds)

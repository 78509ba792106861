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


class _Done:
    """Which shards are done, by probing labels files (a done shard stays done) instead of
    listing a folder of tens of thousands of files after every shard."""

    def __init__(self, out: Path, total: int):
        self.out, self.total, self.first = out, total, 0  # shards < first are done

    def __contains__(self, shard: int) -> bool:
        return run_folder.labels_path(self.out, shard).exists()

    @property
    def left(self) -> range:
        """The shards that may not be done yet."""
        return range(self.first, self.total)

    def all(self) -> bool:
        while self.first < self.total and self.first in self:
            self.first += 1
        return self.first == self.total


def _claims(done: _Done, limit: int | None, seconds: float) -> Iterator[leases.Lease]:
    """One pass over the shards not done: the lease of each one this process could claim
    (free, or its holder's lease expired), up to `limit`."""
    claimed = 0
    for shard in done.left:
        if limit is not None and claimed >= limit:
            return
        if shard in done:
            continue
        lease = leases.claim(done.out, leases.lease_name(shard), seconds)
        if lease is None:
            continue
        if shard in done:  # committed while we claimed it
            lease.release(every_attempt=False)
            continue
        claimed += 1
        yield lease


def _claimable(done: _Done, seconds: float) -> bool:
    """Whether a shard not done has no live lease (its holder died, or gave it up)."""
    return any(shard not in done and not leases.is_held(done.out, leases.lease_name(shard), seconds)
               for shard in done.left)


def _finalized_since(out: Path, since: float) -> bool:
    manifest = Path(out) / run_folder.MANIFEST_FILE
    newest = max((path.stat().st_mtime for path in run_folder.label_files(out)), default=0.0)
    return manifest.exists() and manifest.stat().st_mtime >= max(since, newest)


def label_claimed(run: LabelRun, total: int, limit: int | None, bar: tqdm | None,
                  began: float, seconds: float | None = None
                  ) -> tuple[list[ShardRecord], leases.Lease | None]:
    """Claim and label shards until the run is done (or `limit` shards are labeled here).
    Returns this process's ledger and, if this process is to finalize, the finalization
    lease (else None). `began`: when this call started (wall clock); `seconds`: the lease
    time (`leases.lease_seconds()`)."""
    seconds = seconds or leases.lease_seconds()
    out, ledger, done = run.out, [], _Done(run.out, total)
    poll = min(1.0, seconds / 4)
    while not done.all():
        left = None if limit is None else limit - len(ledger)
        with closing(label_shards(run, _claims(done, left, seconds), bar)) as shards:
            for record in shards:
                ledger.append(record)
                # still holding this shard's lease: a waiting rank does not finalize meanwhile
                if done.all():
                    final = leases.claim(out, leases.FINAL, seconds)
                    if final is not None:
                        return ledger, final
                    break  # a finalization lease is out there: see below whose it is
        if limit is not None and len(ledger) >= limit:
            return ledger, None
        while not done.all() and not _claimable(done, seconds):
            time.sleep(poll)  # others hold every shard left: wait for them, or for one to die
    # Every shard is done, the last by another process: it finalizes, unless it dies first
    # (or none did: a rerun of a finished run finalizes again, as it always has).
    return ledger, _final_unless_finalized(out, began, seconds, poll)


def _final_unless_finalized(out: Path, began: float, seconds: float, poll: float
                            ) -> leases.Lease | None:
    """The finalization lease once no one else works on the run, unless another process
    finalized it since `began`; checked again once the lease is held, since one may have
    finished between the check and the claim."""
    while True:
        while leases.any_live(out, seconds):
            time.sleep(poll)
        if _finalized_since(out, began):
            return None
        final = leases.claim(out, leases.FINAL, seconds)
        if final is not None and _finalized_since(out, began):
            final.release()
            return None
        if final is not None:
            return final
        # another process took it between any_live and claim: wait for it to finish or die

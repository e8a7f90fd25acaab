"""Free what Ray Train runs of stopped trials leave behind: their placement groups."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ray import tune

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)


class OrphanedPlacementGroupReaper(tune.Callback):
    """Free the resources of Ray Train runs whose trial Ray Tune stopped.

    When Tune stops a trial (ASHA at a rung or at the last epoch, the time budget), it ends the
    trial's actor, and with it the Ray Train controller that actor owns, before the controller
    can remove its workers' placement group. Ray Train V2 leaves that to a detached
    ``PlacementGroupCleaner`` that asks the Ray state API whether the controller is alive; the
    state API needs the dashboard, and it cannot tell which cluster to ask when several local
    Ray instances run on one machine. Then the placement group keeps its CPUs/GPUs until Ray
    shuts down and later trials wait for them forever (measured here: the second trial of a
    1-CPU sweep never started).

    This callback runs in the sweep driver and, every ``interval_s`` seconds and when the sweep
    ends, removes placement groups of this job whose creating actor is dead (never detached
    ones, never another job's). It reads the placement-group table from the GCS through Ray's
    internal state accessor (the public ``placement_group_table`` omits the creator); if that
    is unavailable it logs once and does nothing.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.removed = 0
        self._last = 0.0
        self._disabled = False

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self.reap()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.reap()

    def reap(self) -> int:
        """Remove the orphaned placement groups now; return how many were removed."""
        if self._disabled:
            return 0
        try:
            import ray
            from ray._private.state import state
            from ray.core.generated import gcs_pb2
            from ray.util.placement_group import PlacementGroup, remove_placement_group

            job_id = ray.get_runtime_context().get_job_id()
            table = state._connect_and_get_accessor().get_placement_group_table()
        except Exception:
            self._disabled = True
            logger.warning(
                "cannot read Ray's placement-group table; resources of stopped trials are left "
                "to Ray Train's PlacementGroupCleaner",
                exc_info=True,
            )
            return 0
        removed = 0
        for raw in table:
            entry = gcs_pb2.PlacementGroupTableData.FromString(raw)
            creator = ray.ActorID(entry.creator_actor_id)
            if (
                entry.state == gcs_pb2.PlacementGroupTableData.REMOVED
                or entry.is_detached
                or creator.is_nil()
                or not entry.creator_actor_dead
                or ray.JobID(entry.creator_job_id).hex() != job_id
            ):
                continue
            group_id = ray.PlacementGroupID(entry.placement_group_id)
            try:
                remove_placement_group(PlacementGroup(group_id))
            except Exception:  # removed meanwhile by Ray Train's own cleaner
                logger.debug("placement group %s already gone", group_id.hex(), exc_info=True)
                continue
            removed += 1
            logger.info("freed placement group %s of a stopped trial", group_id.hex())
        self.removed += removed
        return removed

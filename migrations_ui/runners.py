"""The backfill job: ids in, the loop in migrations_ui.services."""

from console.jobs import JobContext, runner
from migrations_ui import services
from migrations_ui.models import Backfill


@runner(services.KIND)
def run_backfill(ctx: JobContext) -> dict:
    backfill = Backfill.objects.select_related("target").get(pk=ctx.params["backfill_id"])
    return services.run_backfill(ctx, backfill)

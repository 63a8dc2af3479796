"""What the tenant management commands share: a target, where the job runs, how wide."""

from django.conf import settings
from django.core.management.base import CommandError

from console.models import Target


def add_job_arguments(parser) -> None:
    parser.add_argument("--target", required=True, help="target name")
    parser.add_argument("--run-here", action="store_true",
                        help="run the job in this process instead of on a worker, and wait for it")
    parser.add_argument("--wait", action="store_true", help="wait for the worker to finish the job")
    parser.add_argument("--parallelism", type=int,
                        help=f"tenants at once (default TENANT_PARALLELISM={settings.TENANT_PARALLELISM})")


def target_and_parallelism(opts) -> Target:
    """The --target row (or a clear error), after applying --parallelism to this process."""
    try:
        target = Target.objects.get(name=opts["target"])
    except Target.DoesNotExist:
        raise CommandError(f"no target named {opts['target']!r}") from None
    if opts["parallelism"]:
        settings.TENANT_PARALLELISM = max(1, opts["parallelism"])
    return target

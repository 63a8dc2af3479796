"""Write a staged change of the managed application as Alembic revisions, one per stage, after
its head: `manage.py staged_revision add_not_null_column documents status --type 'varchar(20)'
--backfill "'draft'"`. The console then rolls each stage out over the tenants."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from migrations_ui import staging
from tenants import migrator
from tenants.app_schema import generate


class Command(BaseCommand):
    help = "KIND TABLE COLUMN... [--type T] [--backfill EXPR] [--references TABLE.COLUMN]: one revision per stage"

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=staging.KINDS)
        parser.add_argument("table")
        parser.add_argument("columns", nargs="+", help="the column (the index's columns for add_index)")
        parser.add_argument("--type", dest="column_type", default="", help="the new column's type")
        parser.add_argument("--backfill", default="", help="SQL expression the rows get (NOT NULL kinds)")
        parser.add_argument("--references", default="", help="TABLE.COLUMN of a foreign key")
        parser.add_argument("--pk", default="id", help="the integer primary key the backfill walks")
        parser.add_argument("--versions-dir", default="", help="default: the application's versions directory")

    def handle(self, *args, **opts):
        try:
            head = migrator.head()
            call, definition = generate.helper_call(
                opts["kind"], opts["table"], opts["columns"], column_type=opts["column_type"],
                backfill=opts["backfill"], references=opts["references"], pk=opts["pk"])
        except (ValueError, migrator.MigratorError) as exc:  # DdlRefused and BackfillRefused are ValueErrors
            raise CommandError(str(exc)) from None
        versions = Path(opts["versions_dir"] or Path(migrator.script_directory().dir) / "versions")
        existing = [r.revision for r in migrator.script_directory().walk_revisions()]
        try:
            written = generate.write(versions, head, existing, call, definition)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        migrator.script_directory.cache_clear()
        for each in written:
            self.stdout.write(f"{each.revision} {each.stage}: {each.path}")
        self.stdout.write(f"{definition.describe()}: {len(written)} staged revision(s) after {head or 'the base'}; "
                          "roll each stage out from the Migrations page")

#!/usr/bin/env bash
# Refreshes docs/screenshots/ (the pictures of docs/operator-guide.md) from the browser tests that
# take them: runs those tests, which write test-artifacts/<name>.png, then copies each picture this
# run wrote. A test that fails leaves its old picture, and the script says which and exits non-zero.
# Extra arguments go to pytest (e.g. -x).
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=(
  tests/monitors/test_overview_load.py::test_it_draws_the_load_columns_in_the_browser
  tests/monitors/test_charts.py::test_it_draws_the_target_charts_with_hover_values_and_window_choices
  tests/monitors/test_charts.py::test_it_draws_a_statements_calls_and_mean_time
  tests/monitors/test_slow_queries.py::test_it_draws_the_slow_query_page
  tests/monitors/test_checks.py::test_it_shows_the_checks_on_the_target_page_with_copyable_sql
  tests/monitors/test_drills_browser.py
  tests/monitors/test_pitr_pages.py::test_it_backs_up_and_drills_from_the_target_page_and_shows_the_steps_live
  tests/monitors/test_pitr_pages.py::test_it_shows_the_policy_form_with_pgbackrests_own_error
  tests/console/test_guide_pages.py
  tests/console/test_browser.py::test_it_shows_a_job_progressing_live_until_it_ends
  tests/console/test_live_pages.py::test_it_follows_a_job_row_on_the_job_list_to_its_end_without_a_reload
  tests/console/test_approvals_pages.py::test_it_counts_what_waits_in_the_navigation_and_approves_in_a_browser
  tests/tenants/test_browser.py
  tests/migrations_ui/test_plan.py::test_it_shows_the_plans_in_a_browser
  tests/migrations_ui/test_changes.py::test_it_picks_table_and_columns_in_a_browser_and_shows_the_plan
  tests/migrations_ui/test_backfill.py::test_it_runs_a_backfill_from_its_page_and_shows_it_live
  tests/migrations_ui/test_migrations_page.py::test_it_asks_for_confirmation_of_migrate_all_in_the_browser
  tests/migrations_ui/test_rollout_browser.py::test_it_rolls_a_staged_not_null_change_out_stage_by_stage
)
SHOTS=(
  overview-load fleet-alerts target-page charts-target-1h target-activity slow-queries charts-query-history
  slow-queries-explain-prefilled explain-result health-checks alert-thresholds tenant-list-sorted tenant-live-pending
  tenant-live-active job-running jobs-live-succeeded approvals approval-detail audit migrations app-plan
  change-plan backfill-done drill-list drill-run job-links migrate-all-confirm rollout-requested rollout-approval
  rollout-expand rollout-contract migrations-after-rollout drill-policy drill-backups drill-policy-form
  drill-policy-retention-asked drill-tenant drill-overdue pitr-physical-list pitr-physical-backups pitr-drill-run pitr-policy-form
)

started=$(mktemp)
trap 'rm -f "$started"' EXIT
.venv/bin/python -m pytest -q "${TESTS[@]}" "$@"
tests_status=$?

mkdir -p docs/screenshots
stale=()
for shot in "${SHOTS[@]}"; do
  if [[ test-artifacts/$shot.png -nt $started ]]; then
    cp "test-artifacts/$shot.png" "docs/screenshots/$shot.png"
  else
    stale+=("$shot")
  fi
done
echo "docs/screenshots: $(( ${#SHOTS[@]} - ${#stale[@]} )) of ${#SHOTS[@]} refreshed"
if (( ${#stale[@]} )); then
  echo "not refreshed (their tests failed or no longer take them): ${stale[*]}" >&2
  exit 1
fi
exit "$tests_status"

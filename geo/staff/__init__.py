"""Staff (人员): who is responsible for which grid, building and unit, and what is missing.

- `register`: the staff register and assignments (任职) with half-open periods: `create_person`, `update_person`,
  `create_assignment`, `end_assignment` (never deletes), `import_staff` (CSV/XLSX, all or nothing),
  `list_people`, `list_assignments`; the one jurisdiction rule for people, `covers_person` (reads and writes),
  and the phone rule built on it, `phone_visible`; errors `StaffError`, `NotFound`, `OutOfJurisdiction`,
  `StaffImportError` (`geo.errors.DomainError` kinds);
- `coverage`: the coverage report (人员覆盖) on a day, per grid, building and unit with statuses and totals:
  `coverage_report`, `people_index` (who is named, phones by `phone_visible`), `gaps`, `gaps_csv`, `gaps_xlsx`,
  `scope_prefix`; `CoverageError`; it reads only the grid, community or street asked for;
- `coverage_cache`: reports reused per process until a write to boundaries, buildings, people or assignments
  commits (the change notifications, with a NOTIFY round trip before each reuse); capped by `coverage_cache_rows`;
- `stewards`: steward planning (管家分配), exact minimal walking distance then fewest unit splits:
  `plan_stewards`, `plan_changes`, `apply_plan`, the solver `solve` on one `Instance`; `PlanError`.

The numbers (household bands, steward 5–15 households) are `geo.settings.Rules`.
"""

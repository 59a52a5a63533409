"""Redrawing grids (网格调整): draft plans of a community's or a street's grids, edited, checked, compared,
suggested and published as new boundary versions.

- `drafts`: plans and their operations (`create_plan`, `apply_operation`, `undo`, `load_state`, `plan_info`,
  `plan_geojson`, `published_rows`), the published boundaries' tokens (`community_token`, `street_token`,
  `scope_token`) and the community data operations read (`buildings_frame`, `compounds_frame`, `owner_of_points`);
- `validation`: live validation of a plan (`validate`, `validate_plan_state`, `contexts_for`);
- `diff`: what publishing would change (`diff`: units, moved buildings, staff, classification verdicts);
- `publish`: `publish` a plan as a new boundary version and `rollback` a version, under the per-community lock of
  `geo.store.locks`; `version_scope`, `changes_since`;
- `suggest`: suggested comprehensive grids within the household band (`suggest_for_plan`, `suggest_state`,
  `apply_suggestion`; ReCom), `suggest_band`: the exact CP-SAT step (`check_band`, `contiguous_partition`);
- `etags`: the entity-tag values of plans and published boundaries (`plan_etag`, `version_etag`,
  `revision_in_token`); reading ``If-Match`` is HTTP (``api.preconditions``);
- `errors`: what the plans refuse, as `geo.errors.DomainError` subclasses (`PlanError`, `StaleRevision`,
  `StalePublished`, …), and `refused_as`, which names an entry point's refusals.
"""

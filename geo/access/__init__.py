"""Who may do what (访问控制).

- `users`: users, roles, jurisdictions, password hashing; `Principal` (who calls: `covers`, `ensure_covers`,
  `code_filter`), `user_for_token`, `change_own_password`;
- `apikeys`: long-lived API keys (shown once, stored hashed, revocable); `principal_for_key`;
- `scope`: which unit (and so which jurisdiction) an id names (`SCOPE_PARAMS`, `unit_code`);
- `audit`: the append-only audit log (`record`, `entries`);
- `throttle`: login backoff per account and address, never a lock of the owner (`check`, `record_attempt`,
  `unlock`);
- `sessions`: login sessions as refresh-token families (rotation, reuse detection, logout revocation).

The numbers (password length, throttle limits) are `geo.settings.AuthSettings`.
"""

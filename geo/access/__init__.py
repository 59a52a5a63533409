"""Who may do what: users and roles (users), API keys (apikeys), the append-only audit log (audit), login throttling (throttle)."""

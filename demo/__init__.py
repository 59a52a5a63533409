"""The deterministic synthetic district (synth) and loading it as the demo (load). Tooling over geo, not part of the domain."""

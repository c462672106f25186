"""Helpers for the e2e suite: processes (procs), the agent (agent), one test's traffic and
spans (scenario) and the span contract assertions (spans)."""

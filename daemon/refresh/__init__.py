"""Keeping one login's token alive: the policy (what to do next, from state and clock) and the
refresher that asks Tradovate and writes Redis."""

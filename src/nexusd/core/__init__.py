"""The vocabulary every other layer shares: stages, records, clock, errors, durations."""

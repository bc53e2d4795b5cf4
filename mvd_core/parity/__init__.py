"""Cross-framework parity: tolerances, comparison, report, the `mvd parity` runner, AMP check."""

"""gate-evaluator: decides when a digest may move to the next environment."""

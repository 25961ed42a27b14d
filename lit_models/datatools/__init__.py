"""``lit-models data convert | show | stats``: annotations converted between formats, samples drawn, data counted."""

"""The run's path, one module per activity:

intake -> queueing -> submitting (throttled, per shard) -> completing (the receiver), with
results and cancelling for clients; and the maintainer's side: observing (informers) ->
classifying (the rule table) -> reconciling, recovery (lost runs, heartbeats) and collecting
(garbage), driven by maintaining.
"""

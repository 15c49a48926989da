"""The run's path: intake -> queueing -> submitting -> completing, plus results and cancelling."""

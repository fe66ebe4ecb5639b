"""The replicated state machine: a pure function of the committed log, identical on every node."""

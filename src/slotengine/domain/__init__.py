"""The pure core: booking states, the transition table, hold and queue policy, domain errors."""

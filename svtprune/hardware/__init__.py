"""Hardware accounting: SNN energy from measured spike rates, and a fitted CPU latency model."""

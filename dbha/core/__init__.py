"""The pure core: values, the decision rules, the transition table. No I/O."""

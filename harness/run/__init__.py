"""Running suites: runner groups, target description, pytest invocation, the pytest plugin."""

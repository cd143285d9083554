"""A kind for tests/core/test_registry.py; imported only when the registry loads it."""


class Plugin:
    pass

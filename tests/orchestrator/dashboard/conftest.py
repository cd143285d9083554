import pytest
from django.core.cache import cache


@pytest.fixture
def fresh_cache(db):
    """An empty figure cache before and after: pages cache their figures for a minute
    (orchestrator.dashboard.render.cached_figure), and a test's data must show."""
    cache.clear()
    yield
    cache.clear()

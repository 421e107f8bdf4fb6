"""Partner API routes, under /api/."""

urlpatterns: list = []  # type: ignore[type-arg]

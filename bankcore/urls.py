from django.contrib import admin
from django.urls import include, path

from bankcore.health import health
from bankcore.metrics import metrics_view

urlpatterns = [
    path("health", health, name="health"),
    path("metrics", metrics_view, name="prometheus-metrics"),
    path("admin/", admin.site.urls),
    path("api/", include("bankcore.api.urls")),
]

# problem+json under /api/, Django's usual pages elsewhere.
handler400 = "bankcore.api.problems.handler400"
handler403 = "bankcore.api.problems.handler403"
handler404 = "bankcore.api.problems.handler404"
handler500 = "bankcore.api.problems.handler500"

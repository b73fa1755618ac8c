"""The health check endpoint, for load balancers (see health.py).

    urlpatterns = [..., path("dqcluster/", include("django_dqcluster.urls"))]   # GET /dqcluster/health

200 with ``{"healthy": true, ...}`` when every database answers as health.py
says; 503 with the problem of each one that does not. No addresses or other
members are named: the endpoint is meant to be reachable without logging in.
"""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health as health_check


@never_cache
@require_GET
def health(request):
    result = health_check.check()
    return JsonResponse(result, status=200 if result["healthy"] else 503)

"""The health check, for load balancers (health.py), and the metrics, for Prometheus (metrics.py).

    urlpatterns = [..., path("dqcluster/", include("django_dqcluster.urls"))]

``GET /dqcluster/health``: 200 with ``{"healthy": true, ...}`` when every
database answers as health.py says; 503 with the problem of each one that does
not. No addresses or other members are named: the endpoint is meant to be
reachable without logging in.

``GET /dqcluster/metrics``: the metrics in Prometheus' text format. They name
every member's address, so they answer only a request that carries
``Authorization: Bearer <DQCLUSTER_METRICS_TOKEN>``; with no token set they are
off (403 saying so).
"""

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health as health_check
from . import metrics as node_metrics

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@never_cache
@require_GET
def health(request):
    result = health_check.check()
    return JsonResponse(result, status=200 if result["healthy"] else 503)


@never_cache
@require_GET
def metrics(request):
    token = getattr(settings, "DQCLUSTER_METRICS_TOKEN", None)
    if not token:
        return HttpResponse("metrics are off: set DQCLUSTER_METRICS_TOKEN, and have Prometheus send it as a "
                            "bearer token (they name every member's address)\n",
                            status=403, content_type="text/plain; charset=utf-8")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), str(token).encode()):
        response = HttpResponse("a bearer token is needed: Authorization: Bearer <DQCLUSTER_METRICS_TOKEN>\n",
                                status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="dqcluster metrics"'
        return response
    return HttpResponse(node_metrics.render(node_metrics.collect()), content_type=PROMETHEUS_TEXT)

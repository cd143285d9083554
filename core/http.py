"""The client's address, the same for rate limits and for the audit trail.

Behind a reverse proxy REMOTE_ADDR is the proxy, for every visitor, so a
per-IP limit would be one bucket for all. CLIENT_IP_META_KEY names the
request header the proxy sets (deploy/nginx.conf sets X-Real-IP to the peer
address, overwriting whatever the client sent; the setting is then
HTTP_X_REAL_IP). For an X-Forwarded-For chain the right-most entry is used:
it is the one the proxy appended, the others came from the client.
"""

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    key = settings.CLIENT_IP_META_KEY
    if key:
        forwarded = str(request.META.get(key, "")).split(",")[-1].strip()
        if forwarded:
            return forwarded
    return str(request.META.get("REMOTE_ADDR", ""))

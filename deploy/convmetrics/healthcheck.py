#!/opt/convmetrics/bin/python
"""The image's HEALTHCHECK: GET $CONVMETRICS_HEALTH_URL (default the /readyz of the process
on port 8080: the gateway's answers when Kafka does, serve's and consume's when the store
does); exit 0 on a 2xx, 1 otherwise, saying why (docker inspect shows it)."""

import os
import sys
import urllib.error
import urllib.request

URL = os.environ.get("CONVMETRICS_HEALTH_URL", "http://127.0.0.1:8080/readyz")

try:
    with urllib.request.urlopen(URL, timeout=2) as response:
        print(f"{URL}: {response.status}")
        sys.exit(0)
except urllib.error.HTTPError as exc:
    print(f"{URL}: {exc.code} {exc.read(300).decode(errors='replace')}")
except OSError as exc:
    print(f"{URL}: {exc}")
sys.exit(1)

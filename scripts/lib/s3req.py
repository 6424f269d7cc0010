#!/usr/bin/env python3
"""One signed (SigV4) S3 request with the standard library, for tests and benchmarks.

    s3req.py METHOD /bucket/key [QUERY] [HEADER:VALUE ...] < body

Credentials and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL
(region us-east-1). Prints the response body; exit 0 on 2xx, else prints the status on stderr
and exits 1. QUERY is `a=b&c` (values already URL-encoded, `/` as %2F).
"""
import datetime, hashlib, hmac, os, sys, urllib.error, urllib.parse, urllib.request


def main():
    method, path = sys.argv[1], sys.argv[2]
    query = sys.argv[3] if len(sys.argv) > 3 else ""
    extra = [h.split(":", 1) for h in sys.argv[4:]]
    body = sys.stdin.buffer.read() if method in ("PUT", "POST") else b""
    endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    host = urllib.parse.urlparse(endpoint).netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    params = []
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        params.append((k, v))
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(params))
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    for k, v in extra:
        headers[k.strip().lower()] = v.strip()
    signed_headers = ";".join(sorted(headers))
    canonical = "\n".join([
        method, urllib.parse.quote(path, safe="/-_.~"), canonical_query,
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed_headers, payload_hash,
    ])
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={key}/{scope}, "
                                f"SignedHeaders={signed_headers}, Signature={signature}")
    url = endpoint + urllib.parse.quote(path, safe="/-_.~") + ("?" + canonical_query if canonical_query else "")
    request = urllib.request.Request(url, data=body if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            sys.stdout.buffer.write(response.read())
    except urllib.error.HTTPError as e:
        sys.stdout.buffer.write(e.read())
        print(f"s3req: HTTP {e.code}", file=sys.stderr)
        sys.exit(1)


main()

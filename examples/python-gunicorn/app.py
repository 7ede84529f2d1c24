"""A WSGI app for gunicorn: GET /health for cutover's probes, GET / for people."""


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        body = b"ok\n"
        status = "200 OK"
    elif path == "/":
        body = b"hello from python\n"
        status = "200 OK"
    else:
        body = b"not found\n"
        status = "404 Not Found"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

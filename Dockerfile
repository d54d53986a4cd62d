FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AKKIOSYNC_CONFIG=/config \
    AKKIOSYNC_STATE=/state/akkiosync.db \
    AKKIOSYNC_HTTP_PORT=8080 \
    AKKIOSYNC_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY akkiosync ./akkiosync
RUN pip install . \
    && useradd --create-home --uid 10001 akkiosync \
    && mkdir -p /config/jobs /state \
    && chown akkiosync /state

USER akkiosync
VOLUME ["/state"]
EXPOSE 8080
# The slim image has no curl: ask /healthz with the Python that is there anyway.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["akkiosync"]
CMD ["run"]

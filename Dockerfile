FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AKKIOSYNC_CONFIG=/config \
    AKKIOSYNC_STATE=/state/akkiosync.db

WORKDIR /app
# Dependencies first, so that editing the code does not reinstall them.
COPY pyproject.toml README.md ./
COPY akkiosync ./akkiosync
RUN pip install . \
    && useradd --create-home --uid 10001 akkiosync \
    && mkdir -p /config/jobs /state \
    && chown akkiosync /state

USER akkiosync
VOLUME ["/state"]
ENTRYPOINT ["akkiosync"]
# One pass over every job; the scheduling daemon (`run`) replaces this once it lands.
CMD ["sync"]

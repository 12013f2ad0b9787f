# One image for the API and both workers; the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/hra

# torch pinned and installed alone first so that no other dependency can pull a different build.
RUN pip install torch==2.14.1 torchaudio==2.11.0

COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY workers workers
COPY storage storage
COPY migrations migrations
COPY hra hra
RUN pip install .

RUN useradd --create-home --uid 10001 hra
USER hra
EXPOSE 8000
CMD ["hra", "api", "--host", "0.0.0.0", "--port", "8000"]

# The Home Authority service (pseudonym admission) and the deployment's one-shot setup: an HTTP service needs no
# torch, TenSEAL or Flower, so this image holds BastionFL's code with only cryptography, FastAPI, uvicorn and httpx.
FROM python:3.11-slim
RUN groupadd --gid 49999 app && useradd --uid 49999 --gid 49999 --create-home app \
 && mkdir -p /data /deploy && chown app:app /data /deploy
WORKDIR /opt/bastionfl
COPY pyproject.toml README.md ./
COPY bastionfl ./bastionfl
RUN python -m pip install --no-cache-dir "cryptography==50.0.2" "fastapi==0.138.2" "uvicorn==0.49.0" "httpx==0.29.0" \
 && python -m pip install --no-cache-dir --no-deps .
USER app
VOLUME ["/data"]
ENTRYPOINT ["bastionfl"]

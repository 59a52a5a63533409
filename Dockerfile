FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY geo ./geo
COPY api ./api
COPY cli ./cli
COPY maps ./maps
COPY demo ./demo
COPY data ./data
RUN pip install --no-cache-dir .
ENV GRIDATLAS_VAR_DIR=/app/var
EXPOSE 8000
CMD ["gridatlas", "serve"]

"""The Celery side of fedgate: app, pool, job pipeline, delay queue."""

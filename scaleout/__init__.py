"""Jobs on several machines: the hub (`pool serve --engine celery --broker URL`, hub.py)
hands attempts to `pool worker` processes (worker.py) through Celery over Redis; they
say everything back on a Redis stream (protocol.py). The celery extra: imported only
with `--engine celery` and by `pool worker`."""

"""`pool web`: a dashboard of one spool in the browser (the ``web`` extra).

    pool web --> cli/web.py: the token, a socket --> uvicorn --> app.py (Starlette)
                 app.py --> pages.py: what a page shows, read as `pool status` reads
                                      the spool, rendered by pool.cli.render
                         --> access.py: who may look and act (the token, the Origin)

It keeps nothing of its own but its token (``<spool>/web.token``, 0600): the status
files are the truth, read when a page asks, so no manager needs to run and nothing is
lost with it.
"""

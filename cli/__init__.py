"""The ``pool`` command line: a thin click front end over the ``pool`` library."""

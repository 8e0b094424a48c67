"""Code that runs inside the sandbox worker processes.

Standard library only: the workers start with `python -S` and import this package by path, so nothing from the
trainer's environment (site-packages, botlab's other modules, pydantic) is loaded where model code runs.
"""

"""The import path of the legacy audit script, for code written against it.

`automation_orchestrator.audit` is the only module; the project's own code
imports `audit` directly. This folder is installed as the top-level package
`automation_orchestrator` by pyproject.toml (`[tool.setuptools.packages.find]`).
"""

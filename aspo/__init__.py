"""ASPO RL system: the `aspo` console script and settings shared by every component.

Components live in their own top-level packages (`sandbox`, `services`,
`trainer`, `orchestrator`) and meet only through typed messages on
`services.bus` and HTTP schemas; this package only wires the CLI.
"""

__version__ = "0.1.0"

"""The bottom layer: what every other layer may use and that uses nothing of the workbench --
model configs and presets (:mod:`.config`), registries (:mod:`.registry`), atomic files and run
folders (:mod:`.io`), results as dicts (:mod:`.results`), provenance (:mod:`.provenance`),
sizes and memory (:mod:`.sizes`), the global random generators (:mod:`.seeds`), image grids
(:mod:`.pictures`) and lazy package exports (:mod:`.exports`)."""

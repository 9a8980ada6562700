"""The top layer below the command line: claims judged over seeds (:mod:`.findings`), mask-ratio
sweeps (:mod:`.sweeps`) and the shipped gallery weights (:mod:`.shipped`)."""

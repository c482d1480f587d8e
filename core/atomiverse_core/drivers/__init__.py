"""The drivers every engine shares (optimisers, finite-difference frequencies) and their contract
with an engine. Importing this package is free; its modules bring ASE, SciPy and geomeTRIC."""

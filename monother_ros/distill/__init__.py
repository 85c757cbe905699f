"""Confidence-aware distillation from the RGB teacher to the thermal student (MonoTher-Depth).

``metadata``: the 8-channel confidence-network input on the teacher's grid; ``masks``: top-k
masks; ``losses``: SILog, confidence-weighted consistency, confidence NLL, smoothness and the
stage-1 / stage-2 totals.
"""

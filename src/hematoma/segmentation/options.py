"""The deep segmenter's default blood classes, shared by the library and the CLI (a light import).

The HE definitions measure the intraparenchymal hematoma, BLAST-CT's class 1,
but the network often calls parenchymal blood near the brain's surface
extra-axial (class 2).  Measured (benchmarks/results/deep.json, 50 full-size
synthetic patients, one model): class 1 alone median Dice 0.92, volume r 0.94,
a few clots cut in half; all blood (1+2+4) 0.94, r 0.98, MAE 2.2 mL.  On 26
real slices (issue 12) class 1 alone had median Dice 0 and all blood 0.64.
So all blood is the default; ``ivh_volume_ml`` still reports class 4 apart.
"""

DEFAULT_BLOOD = "blood"

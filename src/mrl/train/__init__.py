"""Training: a Matryoshka fine-tune (``trainer``) or a Matryoshka adaptor on a frozen model (``adaptor``), hard
negatives (``mining``), int8 ranges (``calibration``), the losses, and ``recipe``, which runs them in order:
mine, rotate, then train or fit the adaptor. The CLI, ``mrl run`` and the benchmarks all call the recipe.
"""

"""Features of a case: radiomics (``rad_``), CNN (``cnn_``) and clinical (``clin_``).

Submodules are imported on use (``from hematoma.features.radiomics import
extract_radiomics``) so that reading clinical data does not load pyradiomics
or torch.
"""

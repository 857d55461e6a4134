"""Exporters, loaders and safe pickle loading for SpikeData.

Public modules: ``data_exporters`` (write), ``data_loaders`` (read back), ``s3_utils``.
"""

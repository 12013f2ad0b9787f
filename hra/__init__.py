"""The model: a frozen speech backbone, the shared HRA controller and per-speaker heads.

Imports nothing from app/, workers/ or storage/.
"""

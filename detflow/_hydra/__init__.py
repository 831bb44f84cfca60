"""_hydra"""

"""_harness"""

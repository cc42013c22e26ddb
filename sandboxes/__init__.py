"""The compute side of the portal: GPU inventory, sandbox launcher, metering and the hub spawner.

Its sub-packages arrive with the sandbox and metering issues (see docs in the README).
"""

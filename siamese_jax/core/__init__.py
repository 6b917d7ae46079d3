"""The ground every other layer stands on: errors, the Config, atomic files, named random
streams, device and process helpers. It imports nothing else of the package.
"""

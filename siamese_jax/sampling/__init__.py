"""What a step learns from: pairs of images as indices, the epoch's shuffle, and a
model's keys and splits (`check_data`).
"""

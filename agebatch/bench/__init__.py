"""Benchmarks behind `agebatch bench`. Each prints numbers and ratios measured in one run."""

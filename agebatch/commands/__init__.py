"""The library behind the commands that are more than a pipeline run: calibrate, ensemble, evaluate / compare,
build-engine and the model inventory. `agebatch.cli` only parses options and prints what these return."""
